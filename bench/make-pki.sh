#!/usr/bin/env bash
# A throw-away test PKI for the TLS benchmarks, with the openssl CLI: the shell twin of
# tests/it/support/pki.rs (same extensions, EC P-256 keys in PKCS#8 PEM, issued by `openssl ca`
# so that validity can start a day in the past).
#   bash bench/make-pki.sh DIR [SERVER_DNS_NAME...]
# Writes DIR/ca.pem, DIR/server.{pem,key} (SAN: each DNS name and IP:127.0.0.1; EKU serverAuth,
# clientAuth), DIR/client.{pem,key} (CN=sosdesk-test, EKU clientAuth).
set -euo pipefail
dir=$1
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(sbc.provider.test)
mkdir -p "$dir"
cd "$dir"

san=""
for n in "${names[@]}"; do san+="DNS:$n,"; done
san+="IP:127.0.0.1"
start=$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)
end=$(date -u -d '3650 days' +%Y%m%d%H%M%SZ)

mkdir -p ca-db
: > ca-db/index.txt
echo 1000 > ca-db/serial
cat > ca.cnf <<EOF
[ca]
default_ca = this_ca
[this_ca]
database = ca-db/index.txt
new_certs_dir = ca-db
serial = ca-db/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

# key_and_request WHO CN
key_and_request() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
}
# sign WHO EXTENSIONS SIGNER-ARGS...
sign() {
  local who=$1 ext=$2
  shift 2
  openssl ca -batch -notext -config ca.cnf "$@" -in "$who.csr" -out "$who.pem" -extensions "$ext" \
    -startdate "$start" -enddate "$end" 2>/dev/null
}

key_and_request ca "sosdesk bench CA"
sign ca v3_ca -selfsign -keyfile ca.key
key_and_request server "${names[0]}"
sign server v3_server -cert ca.pem -keyfile ca.key
key_and_request client sosdesk-test
sign client v3_client -cert ca.pem -keyfile ca.key
openssl verify -CAfile ca.pem server.pem client.pem > /dev/null
