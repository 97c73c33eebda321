//! [`Config::validate`]: what serde cannot check — references between sections, addresses,
//! dial strings, switch credentials — each refusal naming the key and the reason.

use super::*;

impl Config {
    /// Checks the whole config after serde has read it; the first problem found is the error
    /// (the key and why), so an administrator fixes one thing at a time with a clear message.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.store.path, &self.store.url) {
            (Some(_), Some(_)) => return Err(self.err("store.url", "give `path` or `url`, not both")),
            (None, None) => return Err(self.err("store", "give `path` (a SQLite file) or `url`")),
            (None, Some(url)) => {
                Location::parse_url(&url.0).map_err(|reason| self.err("store.url", reason))?;
            }
            (Some(_), None) => {}
        }
        if self.store.node.as_deref().is_some_and(|n| n.trim().is_empty() || n.len() > 255) {
            return Err(self.err("store.node", "must be 1 to 255 characters"));
        }
        if self.sip.udp.is_none() && self.sip.tcp.is_none() && self.sip.tls.is_none() {
            return Err(self.err("sip", "give at least one of `udp`, `tcp` and `tls` listen addresses"));
        }
        match (self.sip.tls, &self.sip.tls_cert, &self.sip.tls_key) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(_), _, _) => return Err(self.err("sip.tls", "needs `tls_cert` and `tls_key`")),
            (None, _, _) => return Err(self.err("sip.tls_cert", "is set without a `tls` listen address")),
        }
        if self.sip.tls_client_ca.is_some() && self.sip.tls.is_none() {
            return Err(self.err("sip.tls_client_ca", "is set without a `tls` listen address"));
        }
        if let (Some(a), Some(b)) = (self.sip.tls, self.sip.tcp) {
            if a == b {
                return Err(self.err("sip.tls", "cannot share the TCP listen address"));
            }
        }
        if self.sip.keepalive_s > 3600 {
            return Err(self.err("sip.keepalive_s", "must be between 0 (none) and 3600"));
        }
        if self.sip.t1_ms == 0 || self.sip.t1_ms > 10_000 {
            return Err(self.err("sip.t1_ms", "must be between 1 and 10000"));
        }
        if let Some(h) = &self.sip.public_host {
            // It goes into every Via, Contact and From, and names the HELD server: a host name,
            // an IPv4 address or a bracketed IPv6 address (RFC 3261 §25.1 `host`).
            if !crate::location::held::is_host(h) {
                return Err(self.err(
                    "sip.public_host",
                    format!("{h:?} is not a host name, an IPv4 address or an IPv6 address in brackets"),
                ));
            }
        }
        if !(100..=MAX_INTERVAL_MS).contains(&self.lis.refresh_ms) {
            return Err(self.err("lis.refresh_ms", format!("must be between 100 and {MAX_INTERVAL_MS}")));
        }
        for (sip, what) in [(self.sip.tcp, "TCP"), (self.sip.tls, "TLS")] {
            if let (Some(h), Some(u)) = (self.lis.held, sip) {
                if h == u {
                    return Err(self.err("lis.held", format!("the HELD endpoint cannot share the SIP {what} address")));
                }
            }
        }
        if !(1..=MAX_INTERVAL_MS).contains(&self.routing.route_timeout_ms) {
            return Err(self.err("routing.route_timeout_ms", format!("must be between 1 and {MAX_INTERVAL_MS}")));
        }
        // Every duration is added to the clock: one beyond what `Instant` can hold would panic the
        // engine on the first call that uses it (a huge ELIN window did), so each has a bound.
        if !(0.0..=MAX_ELIN_MINUTES).contains(&self.routing.elin_callback_minutes) {
            return Err(self.err("routing.elin_callback_minutes", format!("must be between 0 and {MAX_ELIN_MINUTES}")));
        }
        if self.routing.health_interval_s > 3600 {
            return Err(self.err("routing.health_interval_s", "must be between 0 (off) and 3600"));
        }
        if self.routing.retry_for_s > MAX_RETRY_FOR_S {
            return Err(self.err("routing.retry_for_s", format!("must be between 0 and {MAX_RETRY_FOR_S}")));
        }
        if let Some(fb) = &self.routing.callback_fallback {
            crate::sip::target::check_target_uri(fb).map_err(|e| self.err("routing.callback_fallback", e))?;
        }
        let mut names = HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.name.trim().is_empty() {
                return Err(self.err(format!("route[{i}].name"), "must not be empty"));
            }
            // It is written after the `@` of the Request-URI and To of every INVITE on the route:
            // `host` or `host:port`, nothing else (a `>` in it once went out as a Request-URI
            // the provider would refuse: found by the config fuzz target).
            if let Some(d) = &r.domain {
                if !is_host_port(d) {
                    return Err(self.err(
                        format!("route[{i}].domain"),
                        format!("{d:?} is not a host name, an IPv4 address or an IPv6 address in brackets, with an optional :port"),
                    ));
                }
            }
            if !names.insert(r.name.as_str()) {
                return Err(self.err(format!("route[{i}].name"), format!("route {:?} is defined twice", r.name)));
            }
            // `transport` must agree with what the address says (`sips:` is TLS on every hop).
            let a = &r.address.0;
            if let Some(t) = r.transport {
                let said = a.transport.map(|t| t.as_str().to_ascii_lowercase());
                let key = format!("{t:?}").to_ascii_lowercase();
                if said.as_deref().is_some_and(|s| s != key) {
                    return Err(
                        self.err(format!("route[{i}].transport"), format!("{key:?} contradicts the address {a}"))
                    );
                }
            }
            if !r.may_use_tls() {
                for (key, set) in [
                    ("tls_ca", r.tls_ca.is_some()),
                    ("tls_cert", r.tls_cert.is_some()),
                    ("tls_key", r.tls_key.is_some()),
                ] {
                    if set {
                        return Err(self.err(
                            format!("route[{i}].{key}"),
                            "is set but the route never uses TLS (set transport = \"tls\")",
                        ));
                    }
                }
            }
            if r.tls_cert.is_some() != r.tls_key.is_some() {
                return Err(self.err(format!("route[{i}].tls_cert"), "give both `tls_cert` and `tls_key`, or neither"));
            }
            if let Some(e) = r.expires {
                if !(60..=86_400).contains(&e) {
                    return Err(self.err(format!("route[{i}].expires"), "must be between 60 and 86400 seconds"));
                }
            }
            // Both or neither: a username alone would answer every challenge with a wrong
            // password (and the provider may lock the trunk); a password alone, nothing.
            match (&r.username, &r.password) {
                (Some(u), Some(Secret(p))) => {
                    for (key, v) in [("username", u.as_str()), ("password", p.as_str())] {
                        if v.is_empty() || v.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
                            return Err(self.err(
                                format!("route[{i}].{key}"),
                                "must not be empty or contain control characters, quotes or backslashes",
                            ));
                        }
                    }
                }
                (None, None) => {
                    if r.realm.is_some() {
                        return Err(self.err(format!("route[{i}].realm"), "is set without username and password"));
                    }
                    if r.register {
                        return Err(self.err(format!("route[{i}].register"), "needs username and password"));
                    }
                }
                (Some(_), None) => return Err(self.err(format!("route[{i}].password"), "is missing: username is set")),
                (None, Some(_)) => return Err(self.err(format!("route[{i}].username"), "is missing: password is set")),
            }
        }
        let mut usages = HashSet::new();
        for (i, u) in self.pstn_usages.iter().enumerate() {
            if !usages.insert(u.name.as_str()) {
                return Err(
                    self.err(format!("pstn_usage[{i}].name"), format!("PSTN usage {:?} is defined twice", u.name))
                );
            }
            if u.routes.is_empty() {
                return Err(self.err(format!("pstn_usage[{i}].routes"), "needs at least one route"));
            }
            for (j, r) in u.routes.iter().enumerate() {
                if !names.contains(r.as_str()) {
                    return Err(self.err(format!("pstn_usage[{i}].routes[{j}]"), format!("no route named {r:?}")));
                }
            }
        }
        let mut policies = HashSet::new();
        for (i, p) in self.policies.iter().enumerate() {
            if !policies.insert(p.name.as_str()) {
                return Err(self.err(format!("policy[{i}].name"), format!("policy {:?} is defined twice", p.name)));
            }
            if !usages.contains(p.pstn_usage.as_str()) {
                return Err(
                    self.err(format!("policy[{i}].pstn_usage"), format!("no PSTN usage named {:?}", p.pstn_usage))
                );
            }
            if let Some(u) = &p.no_location_pstn_usage {
                if !usages.contains(u.as_str()) {
                    return Err(
                        self.err(format!("policy[{i}].no_location_pstn_usage"), format!("no PSTN usage named {u:?}"))
                    );
                }
            }
            if p.numbers.is_empty() {
                return Err(self.err(format!("policy[{i}].number"), "a policy needs at least one emergency number"));
            }
            let mut seen = HashSet::new();
            for (j, n) in p.numbers.iter().enumerate() {
                // Skype for Business: the dial string is 1-10 digits; masks are digits.
                if !is_dial_string(&n.dial_string) {
                    return Err(self.err(
                        format!("policy[{i}].number[{j}].dial_string"),
                        format!("{:?} is not 1-10 digits", n.dial_string),
                    ));
                }
                for (k, m) in std::iter::once(&n.dial_string).chain(n.masks.iter()).enumerate() {
                    if !is_dial_string(m) {
                        return Err(self.err(
                            format!("policy[{i}].number[{j}].masks[{}]", k - 1),
                            format!("{m:?} is not 1-10 digits"),
                        ));
                    }
                    if !seen.insert(m.as_str()) {
                        return Err(
                            self.err(format!("policy[{i}].number[{j}]"), format!("{m:?} appears twice in the policy"))
                        );
                    }
                }
            }
            if let Some(erl) = &p.default_erl {
                self.check_erl(erl, &format!("policy[{i}].default_erl"))?;
            }
            if !p.numbers.iter().any(|n| !n.test) {
                return Err(self.err(
                    format!("policy[{i}].number"),
                    "a policy needs at least one number that is not a test number",
                ));
            }
        }
        if !policies.contains(self.default_policy.as_str()) {
            return Err(self.err("default_policy", format!("no policy named {:?}", self.default_policy)));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if let Some(u) = &p.conference_uri {
                crate::sip::target::target_of_uri(u).map_err(|e| self.err(format!("policy[{i}].conference_uri"), e))?;
                if !self.media.anchor {
                    return Err(
                        self.err(format!("policy[{i}].conference_uri"), "conferencing needs media.anchor = true")
                    );
                }
            }
        }
        if self.media.port_range().is_none() {
            return Err(self.err(
                "media.rtp_ports",
                format!("{:?} is not \"first-last\" with 1024 <= first < last <= 65535", self.media.rtp_ports),
            ));
        }
        // `serve` refuses to anchor media at an address nobody can send to (a core listening on
        // 0.0.0.0 without media.address or an IP public_host): check-config said OK to it. Found
        // with the config fuzz target (issue 19).
        if self.media.anchor {
            let (bind, advertised) = self.rtp_addresses();
            if advertised.is_unspecified() {
                return Err(self.err(
                    "media.address",
                    format!("RTP is bound to {bind}, which parties cannot send to: give the address they should send RTP to"),
                ));
            }
        }
        let mut users = HashSet::new();
        for (i, d) in self.desks.iter().enumerate() {
            if d.name.trim().is_empty() {
                return Err(self.err(format!("desk[{i}].name"), "must not be empty"));
            }
            if d.username.is_empty() || d.username.contains(['"', ':', '\\']) {
                return Err(self.err(format!("desk[{i}].username"), "must not be empty or contain '\"', ':' or '\\'"));
            }
            if !users.insert(d.username.as_str()) {
                return Err(self.err(format!("desk[{i}].username"), format!("{:?} is defined twice", d.username)));
            }
            if d.password.len() < 8 {
                return Err(self.err(format!("desk[{i}].password"), "must be at least 8 characters"));
            }
        }
        let mut lis_users = HashSet::new();
        for (i, u) in self.lis.users.iter().enumerate() {
            let key = |k: &str| format!("lis.users[{i}].{k}");
            if u.username.is_empty() || u.username.contains(['"', ':', '\\']) {
                return Err(self.err(key("username"), "must not be empty or contain '\"', ':' or '\\'"));
            }
            if users.contains(u.username.as_str()) || !lis_users.insert(u.username.as_str()) {
                return Err(self.err(key("username"), format!("{:?} is already a desk or a user account", u.username)));
            }
            if u.password.len() < 8 {
                return Err(self.err(key("password"), "must be at least 8 characters"));
            }
            let owner = u.owner.as_deref().unwrap_or(&u.username);
            if let Err(why) = crate::location::user_entered::owner_key(owner) {
                return Err(self.err(key(if u.owner.is_some() { "owner" } else { "username" }), why));
            }
        }
        self.check_switches()?;
        let mut groups = HashSet::new();
        for (i, g) in self.notification_groups.iter().enumerate() {
            if g.name.is_empty() || !g.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(self.err(format!("notification_group[{i}].name"), "letters, digits, '-', '_' or '.'"));
            }
            if users.contains(g.name.as_str()) || !groups.insert(g.name.as_str()) {
                return Err(self.err(
                    format!("notification_group[{i}].name"),
                    format!("{:?} is already a desk account or a group", g.name),
                ));
            }
            for (j, m) in g.members.iter().enumerate() {
                if !users.contains(m.as_str()) {
                    return Err(
                        self.err(format!("notification_group[{i}].members[{j}]"), format!("no desk account {m:?}"))
                    );
                }
            }
        }
        let lis_uris = self.lis.unlocated_notification_uris.iter().enumerate();
        let all_uris = (self.policies.iter().enumerate())
            .flat_map(|(i, p)| {
                p.notification_uris
                    .iter()
                    .enumerate()
                    .map(move |(j, u)| (format!("policy[{i}].notification_uris[{j}]"), u))
            })
            .chain(lis_uris.map(|(j, u)| (format!("lis.unlocated_notification_uris[{j}]"), u)));
        for (key, u) in all_uris {
            match crate::notify::Target::parse(u, &self.core_host(), &self.core_ports()) {
                Ok(crate::notify::Target::Local(user)) => {
                    if !users.contains(user.as_str()) && !groups.contains(user.as_str()) {
                        return Err(
                            self.err(key, format!("{user:?} is neither a desk account nor a notification group"))
                        );
                    }
                }
                Ok(crate::notify::Target::Remote { .. } | crate::notify::Target::Named { .. }) => {}
                Err(e) => return Err(self.err(key, e)),
            }
        }
        if !(1..=MAX_INTERVAL_MS).contains(&self.notification.attempt_timeout_ms) {
            return Err(self.err("notification.attempt_timeout_ms", format!("must be between 1 and {MAX_INTERVAL_MS}")));
        }
        if self.notification.retry_for_s > MAX_RETRY_FOR_S {
            return Err(self.err("notification.retry_for_s", format!("must be between 0 and {MAX_RETRY_FOR_S}")));
        }
        if self.api.tls_cert.is_some() != self.api.tls_key.is_some() {
            return Err(self.err("api", "give both `tls_cert` and `tls_key`, or neither"));
        }
        let uses: Vec<_> = self.policies.iter().map(|p| (&p.channels[..], &p.escalation[..])).collect();
        let routes: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        crate::channels::validate(&self.alerts, &self.channels, &uses, &routes).map_err(|(k, r)| self.err(k, r))?;
        for (i, name) in self.lis.unlocated_channels.iter().enumerate() {
            match self.channels.iter().find(|c| c.name() == name) {
                None => {
                    return Err(self.err(format!("lis.unlocated_channels[{i}]"), format!("no channel named {name:?}")))
                }
                // An admin's task is written, not spoken at someone who must press 1.
                Some(crate::channels::ChannelConfig::Voice(_)) => {
                    return Err(self.err(
                        format!("lis.unlocated_channels[{i}]"),
                        format!("{name:?} is a voice channel: announcements go by email, webhook or SMS"),
                    ))
                }
                Some(_) => {}
            }
        }
        if self.api.listen.is_some() && self.api.listen == self.lis.held {
            return Err(self.err("api.listen", "the API cannot share the HELD endpoint's address"));
        }
        let mut sites = HashSet::new();
        for (i, s) in self.sites.iter().enumerate() {
            if !sites.insert(s.name.as_str()) {
                return Err(self.err(format!("site[{i}].name"), format!("site {:?} is defined twice", s.name)));
            }
            if !policies.contains(s.policy.as_str()) {
                return Err(self.err(format!("site[{i}].policy"), format!("no policy named {:?}", s.policy)));
            }
            for (j, n) in s.subnets.iter().enumerate() {
                n.parse::<IpNet>().map_err(|_| {
                    self.err(format!("site[{i}].subnets[{j}]"), format!("{n:?} is not a CIDR subnet like 10.1.0.0/16"))
                })?;
            }
            if let Some(erl) = &s.erl {
                self.check_erl(erl, &format!("site[{i}].erl"))?;
            }
        }
        Ok(())
    }

    /// `[[switch]]`: an address, one way to authenticate (RFC 3414 §11.2: USM passwords of at
    /// least 8 characters), a sane interval, unique names.
    fn check_switches(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, sw) in self.switches.iter().enumerate() {
            let key = |k: &str| format!("switch[{i}].{k}");
            let Some(address) = sw.host_port() else {
                return Err(self.err(key("address"), format!("{:?} is not host, host:port or [IPv6]:port", sw.address)));
            };
            match (&sw.community, &sw.user) {
                (Some(_), Some(_)) => {
                    return Err(self.err(key("community"), "give a community (SNMP v2c) or a user (SNMP v3), not both"))
                }
                (None, None) => {
                    return Err(
                        self.err(key("community"), "is missing: give a community (SNMP v2c) or a user (SNMP v3)")
                    )
                }
                (Some(c), None) => {
                    if c.0.is_empty() {
                        return Err(self.err(key("community"), "must not be empty"));
                    }
                    for k in ["auth_protocol", "auth_password", "priv_protocol", "priv_password", "context"] {
                        let set = match k {
                            "auth_protocol" => sw.auth_protocol.is_some(),
                            "auth_password" => sw.auth_password.is_some(),
                            "priv_protocol" => sw.priv_protocol.is_some(),
                            "priv_password" => sw.priv_password.is_some(),
                            _ => sw.context.is_some(),
                        };
                        if set {
                            return Err(self.err(key(k), "is for SNMP v3 (`user`), not a community"));
                        }
                    }
                }
                (None, Some(user)) => {
                    if user.is_empty() {
                        return Err(self.err(key("user"), "must not be empty"));
                    }
                    for (p, pw, what) in [
                        (sw.auth_protocol.is_some(), &sw.auth_password, "auth"),
                        (sw.priv_protocol.is_some(), &sw.priv_password, "priv"),
                    ] {
                        match (p, pw) {
                            (true, None) => return Err(self.err(key(&format!("{what}_password")), "is missing")),
                            (false, Some(_)) => return Err(self.err(key(&format!("{what}_protocol")), "is missing")),
                            (true, Some(pw)) if pw.0.len() < 8 => {
                                return Err(self.err(
                                    key(&format!("{what}_password")),
                                    "must be at least 8 characters (RFC 3414 §11.2)",
                                ))
                            }
                            _ => {}
                        }
                    }
                    if sw.priv_protocol.is_some() && sw.auth_protocol.is_none() {
                        return Err(self.err(
                            key("priv_protocol"),
                            "needs auth_protocol: SNMP v3 has no privacy without authentication",
                        ));
                    }
                }
            }
            if !(1..=1440).contains(&sw.interval_min) {
                return Err(self.err(key("interval_min"), "must be 1 to 1440 minutes"));
            }
            let name = sw.name.clone().unwrap_or(address);
            if name.trim().is_empty() {
                return Err(self.err(key("name"), "must not be empty"));
            }
            if !names.insert(name.clone()) {
                return Err(self.err(key("name"), format!("{name:?} names two switches")));
            }
        }
        Ok(())
    }

    fn check_erl(&self, erl: &Erl, key: &str) -> Result<(), ConfigError> {
        // RFC 5139 §3.1: country is an ISO 3166-1 alpha-2 code; a PIDF-LO with "USA" does not
        // validate, and a PSAP may not read it.
        if let Some(c) = &erl.civic.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(self.err(
                    format!("{key}.country"),
                    format!("{c:?} is not an ISO 3166 two-letter country code like \"US\""),
                ));
            }
        }
        if erl.civic.is_empty() {
            return Err(self.err(key, "an ERL needs at least one civic address element"));
        }
        // `Erl` is also what call events carry, with the pin the store gave it; the config has
        // no plans to point at.
        if erl.floor_plan.is_some() {
            return Err(self.err(
                format!("{key}.floor_plan"),
                "floor plans are kept in the location store: `sosdesk lis floorplan set` (docs/lis.md)",
            ));
        }
        for (j, e) in erl.elins.iter().enumerate() {
            if !e.chars().all(|c| c.is_ascii_digit() || c == '+') || e.is_empty() {
                return Err(self.err(format!("{key}.elins[{j}]"), format!("{e:?} is not a telephone number")));
            }
            // A call to a known ELIN is a PSAP calling back, and goes to the caller it was given to
            // (or to the callback fallback): an ELIN that is also an emergency number turned every
            // emergency call to that number, from every site, into a "callback" that never reached
            // a PSAP. Found with the config fuzz target (issue 19), as were a policy's default ERL
            // ELINs, which were not checked at all.
            let digits = e.trim_start_matches('+');
            for p in &self.policies {
                if p.numbers.iter().any(|n| n.dial_string == digits || n.masks.iter().any(|m| m == digits)) {
                    return Err(self.err(
                        format!("{key}.elins[{j}]"),
                        format!(
                            "{e:?} is an emergency number of policy {:?}: an ELIN is the caller's own number",
                            p.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `host` or `host:port` as a SIP URI writes it (RFC 3261 §25.1 `hostport`).
fn is_host_port(s: &str) -> bool {
    match crate::sip::uri::split_host_port(s) {
        Ok((host, port)) => {
            crate::location::held::is_host(&host)
                && s == format!("{host}{}", port.map(|p| format!(":{p}")).unwrap_or_default())
        }
        Err(_) => false,
    }
}

fn is_dial_string(s: &str) -> bool {
    (1..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}
