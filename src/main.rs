//! The `sosdesk` command: thin — parse arguments, load the config, call the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use sosdesk::audit::AuditStore;
use sosdesk::config::Config;
use sosdesk::db::Location;
use sosdesk::location::admin::{self, ImportError};
use sosdesk::location::store::{LisStore, WiremapKind};
use sosdesk::location::validate::MsagValidator;
use sosdesk::server::Core;

#[derive(Parser)]
#[command(name = "sosdesk", version, about = "Enterprise emergency calling: routing core, audit and security desk")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the routing core until interrupted (Ctrl-C or SIGTERM). SIGHUP re-reads the config
    /// (see `reload`).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Write the process id here while serving, for `sosdesk reload`.
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Make the running core re-read its config: policies, sites, routes, desk accounts and
    /// channels change for new calls, live calls keep theirs. The file is checked here first
    /// (a bad one is reported and not sent); then the core named by its pid file gets SIGHUP.
    /// The core's log and audit record say what it applied.
    Reload {
        /// The config file the core serves (checked before the core is asked).
        #[arg(long, short)]
        config: PathBuf,
        /// The pid file `sosdesk serve --pid-file` writes.
        #[arg(long, default_value = "/run/sosdesk/sosdesk.pid")]
        pid_file: PathBuf,
    },
    /// Check a config file and exit (non-zero naming the file, key and reason when invalid).
    CheckConfig { file: PathBuf },
    /// Recent calls, newest first: time, caller, dialled, location, route, outcome.
    History {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Requests sosdesk refused (ordinary calls, malformed messages, wrong credentials…), newest
    /// first: one record per source address and minute, with counts per reason and samples.
    Rejections {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON (one array of audit records) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only records at or after this time: `2026-12-04` or `2026-12-04T21:00:00Z`.
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Each route's live health from the running core (its HTTP API): up, down or unknown,
    /// since when, the last OPTIONS probe's answer and its round-trip time.
    Routes {
        /// The core's config: where its API listens, and (unless `--user`) the first `[[desk]]`
        /// account to ask with.
        #[arg(long)]
        config: PathBuf,
        /// A desk account of the core, instead of the config's first; its password is read from
        /// the environment (`SOSDESK_API_PASSWORD`), never from the command line (which `ps` shows).
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// How the config's names (routes, notification URIs, callback_fallback) resolve now, by
    /// RFC 3263 through its `[dns]` servers: each target in the order a call would try them, the
    /// answer's time to live, and how long the lookup took. Exits non-zero if any fails.
    Resolve {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The Location Information Service: ERLs and the wiremap (subnets, access points, switches,
    /// ports, MACs → ERL), in Skype for Business's location-database CSV formats.
    Lis {
        #[command(subcommand)]
        command: LisCommand,
    },
}

#[derive(Subcommand)]
enum LisCommand {
    /// Import one SfB location-database CSV file: all of it, or — when any row is bad — nothing,
    /// with every problem listed (file:line:column). Rows set their element's location; elements
    /// not in the file are kept. Creates the store file if it does not exist.
    Import {
        file: PathBuf,
        /// What the file maps: subnets, waps, switches, ports (the SfB formats) or macs.
        #[arg(long, value_parser = parse_kind)]
        kind: WiremapKind,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Export one kind as an SfB location-database CSV file (with a header row).
    Export {
        #[arg(long, value_parser = parse_kind)]
        kind: WiremapKind,
        /// Write here (atomically: a temporary file renamed into place) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Validate every ERL's civic address (required elements, then street and house number
    /// against the MSAG extract) and record each one's status. Unvalidated ERLs are still used
    /// for routing; calls from them are flagged for the desk.
    Validate {
        #[command(flatten)]
        store: StoreArg,
        /// The MSAG extract (CSV: community,street,low,high,parity). Default: `[lis] msag` of
        /// the config.
        #[arg(long)]
        msag: Option<PathBuf>,
    },
    /// The networks sosdesk could not locate: each subnet, switch and access point from which a
    /// call or HELD request fell back to a site default or to nothing, with counts, first and
    /// last seen, and the share of calls and HELD requests the wiremap located.
    Unlocated {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only elements seen at or after this time (and outcomes from its day on):
        /// `2026-12-04` or `2026-12-04T21:00:00Z`.
        #[arg(long, value_parser = parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Switch-port discovery: poll every `[[switch]]` of the config once over SNMP and print
    /// each switch's answer (or why it gave none), every MAC address learnt — switch, port,
    /// ifIndex, VLAN — and the ERL a call or HELD request from it gets from the store's wiremap.
    /// Exits 1 when a switch did not answer.
    Discover {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// User-entered locations of remote users (docs/location.md): list them, set one (validated
    /// like `lis validate`), clear one. A running core picks a change up within `lis.refresh_ms`.
    /// Each change is a `user-location-changed` record of the store's audit log (by `cli`).
    UserLocation {
        #[command(subcommand)]
        command: UserLocationCommand,
    },
    /// An ERL's floor plan: the image (PNG or SVG) the desk shows with a pin at the ERL's point.
    Floorplan {
        #[command(subcommand)]
        command: FloorplanCommand,
    },
    /// Site maps: georeferenced images (an OpenStreetMap export of the campus, a site plan) on
    /// which the desk draws a call's geodetic location, without any internet map service.
    Sitemap {
        #[command(subcommand)]
        command: SitemapCommand,
    },
    /// Every ERL: validation status, how many network elements of each kind use it, ELINs, address.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserLocationCommand {
    /// Every user-entered location: owner, address, the network it was entered from, by whom, when.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set (or confirm) a user's location: validated against the MSAG of `--msag` or the config's
    /// `[lis] msag` (without one, the required elements are checked); refused with the reasons.
    Set {
        #[command(flatten)]
        store: StoreArg,
        /// The caller it is for: number or SIP user part, as its calls show it.
        #[arg(long)]
        owner: String,
        /// RFC 5139 element and value, repeated: `--civic country=US --civic A1=WA --civic
        /// A3=Redmond --civic RD=Main --civic STS=St --civic HNO=12`.
        #[arg(long = "civic", value_name = "ELEMENT=VALUE", required = true)]
        civic: Vec<String>,
        /// Label shown to people ("Alice, home office").
        #[arg(long, default_value = "")]
        label: String,
        /// The device's address on the network the location is for (its calls must come from
        /// that /24 or /64). Without it the entry waits for the user's confirmation.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        bssid: Option<String>,
        #[arg(long)]
        msag: Option<PathBuf>,
    },
    /// Remove a user's location.
    Clear {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        owner: String,
    },
}

#[derive(Subcommand)]
enum FloorplanCommand {
    /// Give an ERL (its id in `sosdesk lis list`) a floor plan and the point on it where the ERL
    /// is. The image is checked: a PNG must be a PNG; an SVG with scripts, event handlers,
    /// foreignObject or references to other files is refused. At most 4 MiB.
    Set {
        #[arg(long)]
        erl: i64,
        /// A PNG or SVG file.
        #[arg(long)]
        image: PathBuf,
        /// The point from the image's left edge, as a fraction of its width (0 to 1): pixel x /
        /// image width.
        #[arg(long)]
        x: f64,
        /// The point from the image's top edge, as a fraction of its height (0 to 1).
        #[arg(long)]
        y: f64,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Take an ERL's floor plan away.
    Clear {
        #[arg(long)]
        erl: i64,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Show an ERL's floor plan and point; with --output, write the image there.
    Show {
        #[arg(long)]
        erl: i64,
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Subcommand)]
enum SitemapCommand {
    /// Set a site map (a new one, or another image or other edges for the one of that name):
    /// the image and the latitude and longitude of its edges (WGS 84 degrees, as an
    /// OpenStreetMap export shows them). The image is checked as a floor plan's is.
    Set {
        /// Its name, shown on the desk under the map ("HQ campus").
        #[arg(long)]
        name: String,
        /// A PNG or SVG file, drawn in Web Mercator (as OpenStreetMap and web maps are) or, over
        /// a campus, with linear latitude.
        #[arg(long)]
        image: PathBuf,
        /// Latitude of the image's top edge.
        #[arg(long, allow_negative_numbers = true)]
        north: f64,
        /// Latitude of the image's bottom edge.
        #[arg(long, allow_negative_numbers = true)]
        south: f64,
        /// Longitude of the image's left edge.
        #[arg(long, allow_negative_numbers = true)]
        west: f64,
        /// Longitude of the image's right edge.
        #[arg(long, allow_negative_numbers = true)]
        east: f64,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Every site map: name, edges, image.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take a site map away.
    Clear {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

fn parse_kind(s: &str) -> Result<WiremapKind, String> {
    WiremapKind::parse(s).ok_or_else(|| {
        let all: Vec<&str> = WiremapKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?}: one of {}", all.join(", "))
    })
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Re-check the hash chain of every audit row.
    Verify {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Export every audit row.
    Export {
        #[command(flatten)]
        store: StoreArg,
        /// CSV (the only format for now; the flag keeps the command explicit).
        #[arg(long, required = true)]
        csv: bool,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Which store: from a config file, or a database file named directly. The audit log and the LIS
/// tables live in the same file.
#[derive(Args)]
struct StoreArg {
    #[arg(long, short, conflicts_with = "store")]
    config: Option<PathBuf>,
    /// The SQLite store file itself, or a store URL (`postgres://…`, `sqlite:…`).
    #[arg(long)]
    store: Option<PathBuf>,
}

impl StoreArg {
    fn location(&self) -> Result<Location, String> {
        match (&self.store, &self.config) {
            (Some(s), _) => match s.to_str() {
                Some(u) if u.starts_with("postgres") || u.starts_with("sqlite:") => {
                    Location::parse_url(u).map_err(|e| format!("--store: {e}"))
                }
                _ => Ok(Location::Sqlite(s.clone())),
            },
            (None, Some(c)) => Config::load(c).map(|c| c.store_location()).map_err(|e| e.to_string()),
            (None, None) => Err("name the audit store with --config FILE or --store FILE".into()),
        }
    }

    async fn open(&self) -> Result<AuditStore, String> {
        let l = self.location()?;
        if l.path().is_some_and(|p| !p.exists()) {
            return Err(format!("{l}: no audit store there (it is created by `sosdesk serve`)"));
        }
        AuditStore::open(l).await.map_err(|e| e.to_string())
    }

    /// The LIS tables of the store; `create` for an import, which may come before the first
    /// `sosdesk serve`.
    async fn open_lis(&self, create: bool) -> Result<LisStore, String> {
        let l = self.location()?;
        if !create && l.path().is_some_and(|p| !p.exists()) {
            return Err(format!("{l}: no store there (`sosdesk lis import` or `sosdesk serve` creates it)"));
        }
        LisStore::open(l).await.map_err(|e| e.to_string())
    }
}

/// A kept change of a user-entered location made here, appended to the store's audit chain
/// (`user-location-changed`, by `cli`). `AuditStore::append` continues the chain inside a write
/// transaction every writer waits for, so a core writing the same chain meanwhile cannot fork it.
/// The change is already kept: a record that cannot be written is an error that says so.
async fn audit_user_location(
    store: &StoreArg,
    change: sosdesk::location::user_entered::Change,
    owner: &str,
    entry: Option<&sosdesk::location::user_entered::UserLocation>,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let ev = sosdesk::events::CallEvent::user_location_changed(change, owner, entry, "cli", "cli", String::new(), at);
    let unaudited = |e: String| format!("{owner}: {} but the audit record was not written: {e}", change.as_str());
    let audit = store.open().await.map_err(unaudited)?;
    let appended = audit.append(&[ev]).await.map_err(|e| unaudited(e.to_string()));
    audit.close().await;
    appended.map(|_| ())
}

async fn user_location(command: UserLocationCommand) -> Result<ExitCode, String> {
    use sosdesk::location::user_entered::{Change, EntryError, NetworkSeen, UserLocations};
    match command {
        UserLocationCommand::List { store, json } => {
            let s = store.open_lis(false).await?;
            let all = s.user_locations().await.map_err(|e| e.to_string())?;
            s.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?);
            } else {
                print!("{}", admin::user_location_table(&all));
            }
            Ok(ExitCode::SUCCESS)
        }
        UserLocationCommand::Set { store, owner, civic, label, ip, mac, bssid, msag } => {
            let civic = admin::civic_from_pairs(&civic)?;
            let msag = match (msag, &store.config) {
                (Some(p), _) => Some(p),
                (None, Some(c)) => Config::load(c).map_err(|e| e.to_string())?.msag_path(),
                (None, None) => None,
            };
            let validator = match &msag {
                Some(p) => Some(std::sync::Arc::new(MsagValidator::load(p).map_err(|e| e.to_string())?) as _),
                None => None,
            };
            let users = UserLocations { store: store.open_lis(true).await?, book: Default::default(), validator };
            // The kept entries first: whether this is a new address or the same one confirmed
            // (the audit record says which), and when it was first entered.
            users.book.replace_all(users.store.user_locations().await.map_err(|e| e.to_string())?);
            let erl = sosdesk::location::Erl { label, civic, ..Default::default() };
            let entered = users.enter(&owner, erl, NetworkSeen { ip, mac, bssid }, "cli", chrono::Utc::now()).await;
            users.store.close().await;
            match entered {
                Ok((e, change)) => {
                    println!("{}: {} (network: {})", e.owner, e.erl.civic.one_line(), e.network.describe());
                    if msag.is_none() {
                        println!("note: no MSAG given (--msag or [lis] msag): only the required elements were checked");
                    }
                    audit_user_location(&store, change, &e.owner, Some(&e), e.confirmed_at).await?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(EntryError::Invalid(reasons)) => {
                    Err(format!("{owner}: refused, the address is not valid:\n  {}", reasons.join("\n  ")))
                }
                Err(e) => Err(format!("{owner}: {e}")),
            }
        }
        UserLocationCommand::Clear { store, owner } => {
            let users =
                UserLocations { store: store.open_lis(false).await?, book: Default::default(), validator: None };
            let removed = users.clear(&owner).await;
            users.store.close().await;
            match removed.map_err(|e| e.to_string())? {
                true => {
                    println!("{owner}: cleared");
                    let owner = sosdesk::location::user_entered::owner_key(&owner)?;
                    audit_user_location(&store, Change::Cleared, &owner, None, chrono::Utc::now()).await?;
                    Ok(ExitCode::SUCCESS)
                }
                false => Err(format!("{owner}: no user-entered location")),
            }
        }
    }
}

/// mimalloc instead of glibc's malloc: under a steady call load glibc's per-thread arenas kept
/// growing the process while the heap in use stayed flat (BENCHMARKS.md, "Soak").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // rustls warns of every client that sends an IP address as SNI (linphonec does):
            // harmless, and not for an admin's log.
            tracing_subscriber::EnvFilter::try_from_env("SOSDESK_LOG").unwrap_or_else(|_| "info,rustls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sosdesk: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("sosdesk: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn run(cmd: Command) -> Result<ExitCode, String> {
    match cmd {
        Command::CheckConfig { file } => {
            let cfg = Config::load(&file).map_err(|e| e.to_string())?;
            // The TLS files as the core would read them: a key that does not match its
            // certificate is found now, not at the start.
            sosdesk::transport::TlsSetup::from_config(&cfg).map_err(|e| format!("{}: {e}", file.display()))?;
            println!(
                "{}: OK ({} policies, {} routes, {} sites; audit store {})",
                file.display(),
                cfg.policies.len(),
                cfg.routes.len(),
                cfg.sites.len(),
                cfg.store_location()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, pid_file } => serve(&config, pid_file).await,
        Command::Reload { config, pid_file } => reload(&config, &pid_file),
        Command::History { store, json, limit } => {
            let s = store.open().await?;
            let calls = s.history(limit).await.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&calls).map_err(|e| e.to_string())?);
            } else {
                print_history(&calls);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Routes { config, user, json } => {
            let password = std::env::var("SOSDESK_API_PASSWORD").ok();
            if user.is_some() && password.is_none() {
                return Err("--user needs its password in SOSDESK_API_PASSWORD".into());
            }
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            let addr = cfg
                .api
                .listen
                .ok_or("the config has no [api] listen address: the core's routes are shown through its API")?;
            let (user, password) = match (user, password) {
                (Some(u), Some(p)) => (u, p),
                _ => cfg
                    .desks
                    .first()
                    .map(|d| (d.username.clone(), d.password.clone()))
                    .ok_or("the config has no [[desk]] account to ask the core with: give --user and --password")?,
            };
            let tls = cfg.api.tls_cert.is_some();
            let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
            let host = if addr.is_ipv6() && !addr.ip().is_unspecified() { format!("[{host}]") } else { host };
            let base = format!("{}://{host}:{}", if tls { "https" } else { "http" }, addr.port());
            let client = sosdesk::api::client::ApiClient::new(&base, &user, &password, cfg.api.tls_cert.as_deref())
                .map_err(|e| e.to_string())?;
            let routes = client.routes().await.map_err(|e| format!("{e} (is sosdesk serve running?)"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&routes).map_err(|e| e.to_string())?);
            } else {
                print_routes(&routes);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Resolve { config, json } => resolve(&config, json).await,
        Command::Rejections { store, json, since, limit } => {
            let s = store.open().await?;
            let records = s.refusals(since, limit).await.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?);
            } else {
                print_refusals(&records);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify { store } } => {
            let s = store.open().await?;
            let report = s.verify().await.map_err(|e| e.to_string())?;
            if report.is_ok() {
                println!(
                    "audit chain OK: {} rows verified (last seq {}, hash {})",
                    report.rows_checked,
                    report.last_seq.unwrap_or(0),
                    report.last_hash.as_deref().unwrap_or("-")
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("audit chain BROKEN: {} of {} rows fail the check", report.bad_rows, report.rows_checked);
                if let Some(p) = &report.first_problem {
                    println!("  first problem: {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Audit { command: AuditCommand::Export { store, csv: _, output } } => {
            let s = store.open().await?;
            match output {
                Some(path) => {
                    // Written to a temporary file and renamed: never a half-written export.
                    let tmp = path.with_extension("partial");
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?,
                    );
                    s.export_csv(&mut f).await.map_err(|e| e.to_string())?;
                    use std::io::Write;
                    f.flush().map_err(|e| e.to_string())?;
                    drop(f);
                    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                None => {
                    let mut out = std::io::stdout().lock();
                    s.export_csv(&mut out).await.map_err(|e| e.to_string())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lis { command } => lis(command).await,
    }
}

async fn lis(cmd: LisCommand) -> Result<ExitCode, String> {
    match cmd {
        LisCommand::Import { file, kind, store } => {
            let parsed = match admin::read_wiremap_file(&file, kind) {
                Ok(p) => p,
                Err(ImportError::Unreadable(msg)) => return Err(msg),
                Err(refused) => {
                    eprint!("{refused}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            for line in admin::warning_lines(&parsed) {
                eprintln!("{line}");
            }
            let s = store.open_lis(true).await?;
            let report = admin::import(&s, &file.display().to_string(), &parsed).await.map_err(|e| e.to_string())?;
            print!("{report}");
            s.close().await;
            Ok(ExitCode::SUCCESS)
        }
        LisCommand::Export { kind, output, store } => {
            let s = store.open_lis(false).await?;
            let batch = s.export_batch(kind).await.map_err(|e| e.to_string())?;
            s.close().await;
            match output {
                Some(path) => println!("{}", admin::export_to_file(&path, kind, &batch)?),
                None => admin::export_to(&mut std::io::stdout().lock(), kind, &batch)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        LisCommand::Validate { store, msag } => {
            let msag = match (msag, &store.config) {
                (Some(p), _) => p,
                (None, Some(c)) => Config::load(c)
                    .map_err(|e| e.to_string())?
                    .msag_path()
                    .ok_or_else(|| format!("{}: no `[lis] msag` file; give --msag FILE", c.display()))?,
                (None, None) => return Err("give --msag FILE (or --config FILE with `[lis] msag`)".into()),
            };
            let validator = MsagValidator::load(&msag).map_err(|e| e.to_string())?;
            let s = store.open_lis(false).await?;
            let tally =
                admin::validate_all(&s, &validator, |line| println!("{line}")).await.map_err(|e| e.to_string())?;
            println!("{}", admin::validation_summary(&tally, &msag, &validator));
            s.close().await;
            Ok(ExitCode::SUCCESS)
        }
        LisCommand::Unlocated { store, json, since } => {
            let s = store.open_lis(false).await?;
            let report = s.unlocated_report(since).await.map_err(|e| e.to_string())?;
            s.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            } else {
                print!("{}", admin::unlocated_table(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        LisCommand::Discover { config, json } => discover(&config, json).await,
        LisCommand::UserLocation { command } => user_location(command).await,
        LisCommand::Floorplan { command } => {
            let line = match command {
                FloorplanCommand::Set { erl, image, x, y, store } => {
                    let img = admin::read_floor_plan(&image)?;
                    let s = store.open_lis(false).await?;
                    let line = admin::set_floor_plan(&s, erl, &img, x, y).await;
                    s.close().await;
                    line?
                }
                FloorplanCommand::Clear { erl, store } => {
                    let s = store.open_lis(false).await?;
                    let had = s.clear_floor_plan(erl).await.map_err(|e| e.to_string());
                    s.close().await;
                    if had? {
                        format!("ERL {erl}: floor plan cleared")
                    } else {
                        format!("ERL {erl}: had no floor plan")
                    }
                }
                FloorplanCommand::Show { erl, output, store } => {
                    let s = store.open_lis(false).await?;
                    let line = admin::show_floor_plan(&s, erl, output.as_deref()).await;
                    s.close().await;
                    line?
                }
            };
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        LisCommand::Sitemap { command } => {
            let line = match command {
                SitemapCommand::Set { name, image, north, south, west, east, store } => {
                    let bounds = sosdesk::location::sitemap::Bounds::new(north, south, west, east)?;
                    sosdesk::location::sitemap::check_name(&name)?;
                    let img = admin::read_floor_plan(&image)?;
                    // Creates the store: a site map may be the first location data there is.
                    let s = store.open_lis(true).await?;
                    let line = admin::set_site_map(&s, &name, &img, bounds).await;
                    s.close().await;
                    line?
                }
                SitemapCommand::List { store, json } => {
                    let s = store.open_lis(false).await?;
                    let maps = s.list_site_maps().await.map_err(|e| e.to_string());
                    s.close().await;
                    let maps = maps?;
                    if json {
                        serde_json::to_string_pretty(&maps).map_err(|e| e.to_string())?
                    } else {
                        admin::site_map_table(&maps)
                    }
                }
                SitemapCommand::Clear { name, store } => {
                    let s = store.open_lis(false).await?;
                    let had = s.clear_site_map(&name).await.map_err(|e| e.to_string());
                    s.close().await;
                    if had? {
                        format!("site map {name:?} cleared")
                    } else {
                        format!("no site map {name:?}")
                    }
                }
            };
            println!("{}", line.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        LisCommand::List { store, json } => {
            let s = store.open_lis(false).await?;
            let erls = s.list_erls().await.map_err(|e| e.to_string())?;
            let counts = s.counts().await.map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&erls).map_err(|e| e.to_string())?);
            } else {
                print!("{}", admin::erl_table(&erls));
                println!("{}", admin::counts_line(&counts, s.location()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sosdesk lis discover`: one poll of every switch, and the ERL each MAC learnt gets.
async fn discover(config: &Path, json: bool) -> Result<ExitCode, String> {
    use sosdesk::location::discovery::{poll_once, DiscoveringLocator};
    use sosdesk::location::{DeviceAttachment, Locator};
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    if cfg.switches.is_empty() {
        return Err(format!("{}: no [[switch]] to poll", config.display()));
    }
    let targets: Vec<_> = cfg.switches.iter().map(|s| s.target()).collect();
    let (discovery, report) = poll_once(&targets).await;
    // The store's wiremap, when there is a store: what each MAC's port maps to.
    let store = cfg.store_path();
    let wiremap = match store.exists() {
        true => {
            let s = LisStore::open(&store).await.map_err(|e| e.to_string())?;
            let loaded = s.load_wiremap().await.map_err(|e| e.to_string());
            s.close().await;
            let (erls, entries) = loaded?;
            Some(sosdesk::location::wiremap::Wiremap::build(erls, &entries).map_err(|e| e.to_string())?)
        }
        false => None,
    };
    let locator = wiremap.map(|w| DiscoveringLocator { wiremap: w, table: discovery.table().clone() });
    let erl_of = |mac: &sosdesk::location::Mac| {
        let device = DeviceAttachment { mac: Some(*mac), ..DeviceAttachment::default() };
        let (erl, _) = locator.as_ref()?.locate(&device)?;
        Some(if erl.label.is_empty() { erl.civic.one_line() } else { erl.label.clone() })
    };
    let entries = discovery.table().load().entries();
    if json {
        let macs: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e.as_ref()).unwrap_or_default();
                v["erl"] = serde_json::json!(erl_of(&e.mac));
                v
            })
            .collect();
        let out = serde_json::json!({ "switches": report.switches, "moves": report.moves, "macs": macs });
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    } else {
        print!("{}", admin::discovery_table(&report, &entries, erl_of));
    }
    Ok(if report.switches.iter().all(|s| s.state == "ok") { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `sosdesk resolve`: each name the core would keep resolved, resolved once now.
async fn resolve(config: &Path, json: bool) -> Result<ExitCode, String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let local =
        sosdesk::routing::LocalEndpoint { host: cfg.core_host(), udp: cfg.sip.udp, tcp: cfg.sip.tcp, tls: cfg.sip.tls };
    let names = sosdesk::routing::Engine::new(&cfg, local, sosdesk::clock::Now::read()).names_to_resolve();
    if names.is_empty() {
        println!("{}: no names to resolve (every route and target is an IP address)", config.display());
        return Ok(ExitCode::SUCCESS);
    }
    let resolver = sosdesk::dns::SipResolver::from_config(&cfg)?;
    let mut failed = false;
    let mut out = Vec::new();
    for name in names {
        let started = std::time::Instant::now();
        let answer = resolver.resolve(&name).await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (targets, ttl_s, error) = match answer {
            Ok(r) => {
                let ttl = r.valid_until.saturating_duration_since(tokio::time::Instant::now()).as_secs();
                (r.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(), Some(ttl), None)
            }
            Err(e) => {
                failed = true;
                (Vec::new(), None, Some(e))
            }
        };
        if !json {
            match (&error, ttl_s) {
                (Some(e), _) => println!("{name}: FAILED after {ms:.1} ms: {e}"),
                (None, Some(ttl)) => println!("{name}: {} (for {ttl} s; {ms:.1} ms)", targets.join(", ")),
                _ => {}
            }
        }
        out.push(serde_json::json!({ "name": name.to_string(), "targets": targets, "ttl_s": ttl_s, "ms": ms, "error": error }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn serve(config: &Path, pid_file: Option<PathBuf>) -> Result<ExitCode, String> {
    exit_on_panic();
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let core = Core::start(&cfg).await.map_err(|e| e.to_string())?;
    let l = &core.local;
    let listeners: Vec<String> = [("udp", l.udp), ("tcp", l.tcp), ("tls", l.tls)]
        .into_iter()
        .filter_map(|(t, a)| a.map(|a| format!("{t}:{a}")))
        .collect();
    let pid = pid_file.map(PidFile::write).transpose()?;
    // The handlers first: a SIGTERM right after "serving" (a service manager, a test) stops the
    // core cleanly instead of killing the process with the default action.
    let mut signals = Signals::new();
    println!("sosdesk serving emergency calls on {} (audit: {})", listeners.join(" "), cfg.store_location());
    // systemd (Type=notify): started; the watchdog's WATCHDOG=1 follow (sosdesk::watchdog).
    sosdesk::watchdog::sd_notify("READY=1");
    while let Signal::Reload = signals.next().await {
        // Off the call path: the engine takes the new config between two inputs.
        // Also in the log and the audit record; written without println!, which panics (and so
        // would end the core) when nobody reads standard output any more.
        use std::io::Write;
        let _ = match core.reload().await {
            Ok(done) => writeln!(std::io::stdout(), "sosdesk: {} reloaded: {done}", cfg.source.display()),
            Err(e) => writeln!(std::io::stderr(), "sosdesk: reload refused, the running config is kept: {e}"),
        };
    }
    sosdesk::watchdog::sd_notify("STOPPING=1");
    core.stop().await;
    drop(pid);
    Ok(ExitCode::SUCCESS)
}

/// `sosdesk reload`: check the file, then SIGHUP to the core of the pid file.
fn reload(config: &Path, pid_file: &Path) -> Result<ExitCode, String> {
    Config::load(config).map_err(|e| format!("{e}\nnot reloaded: the running config is kept"))?;
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("{}: {e} (is sosdesk serve running with --pid-file?)", pid_file.display()))?;
    let pid: i32 = text.trim().parse().map_err(|_| format!("{}: not a process id: {text:?}", pid_file.display()))?;
    #[cfg(unix)]
    {
        // SAFETY: kill(2) with a signal number; it touches no memory of ours.
        if pid <= 0 || unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("cannot signal process {pid} of {}: {e}", pid_file.display()));
        }
        println!(
            "sosdesk: asked process {pid} to reload {} (its log and `sosdesk audit` say what it applied)",
            config.display()
        );
        Ok(ExitCode::SUCCESS)
    }
    #[cfg(not(unix))]
    {
        Err(format!("reload signals process {pid} with SIGHUP: Unix only"))
    }
}

/// The pid file of `serve --pid-file`: written whole (a temporary file renamed into place),
/// removed when the core has stopped.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: PathBuf) -> Result<PidFile, String> {
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("pid file {}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Exit code of a core that panicked (EX_SOFTWARE, sysexits.h).
const EXIT_PANICKED: i32 = 70;

/// A panic in any task of the running core ends the process, instead of leaving a live process
/// whose engine task is gone and that routes nothing (issue 19: a zombie): the service manager
/// restarts it at once, and every emergency call meanwhile gets the PBX's own alternative route
/// (its INVITE times out or is refused) rather than silence from a process that looks healthy.
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(panic = %info, "a task of the core panicked: exiting so that sosdesk is restarted");
        std::process::exit(EXIT_PANICKED);
    }));
}

/// What the process is asked by signals: stop (Ctrl-C, SIGTERM) or reload (SIGHUP).
enum Signal {
    Stop,
    Reload,
}

struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals { term: signal(SignalKind::terminate()).ok(), hup: signal(SignalKind::hangup()).ok() }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = recv(&mut self.term) => Signal::Stop,
                _ = recv(&mut self.hup) => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

/// `--since`: a date (midnight UTC) or an RFC 3339 time.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("{s:?}: expected a date (2026-12-04) or an RFC 3339 time (2026-12-04T21:00:00Z)"))
}

/// Caller-controlled text for a terminal: control characters replaced, so they cannot move the
/// cursor or rewrite earlier lines; at most `n` characters.
fn clean(s: &str, n: usize) -> String {
    s.chars().map(|ch| if ch.is_control() { '?' } else { ch }).take(n).collect()
}

fn print_routes(routes: &[sosdesk::routing::health::RouteHealthReport]) {
    use sosdesk::routing::health::HealthState;
    println!("{:<24} {:<8} {:<26} {:>8}  last probe", "route", "state", "since", "rtt");
    for r in routes {
        let state = match r.state {
            HealthState::Up => "up",
            HealthState::Down => "DOWN",
            HealthState::Unknown => "unknown",
        };
        let since = r.since.map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string());
        let rtt = r.rtt_ms.map(|ms| format!("{ms:.1} ms")).unwrap_or_else(|| "-".into());
        let last = match (&r.last, r.last_at) {
            (Some(l), Some(at)) => format!("{l} at {}", at.with_timezone(&chrono::Local).format("%H:%M:%S")),
            _ => "not probed yet (routing.health_interval_s = 0 turns probing off)".into(),
        };
        println!(
            "{:<24} {:<8} {:<26} {:>8}  {last} ({})",
            r.route,
            state,
            since.unwrap_or_else(|| "-".into()),
            rtt,
            r.target
        );
        if let Some(reg) = &r.registration {
            println!("{:<24} trunk registration: {reg}", "");
        }
    }
}

fn print_refusals(records: &[sosdesk::audit::AuditRecord]) {
    if records.is_empty() {
        println!("no refused requests recorded");
        return;
    }
    println!("{:<20} {:<40} {:>8}  REASONS", "UNTIL (local)", "SOURCE", "COUNT");
    for r in records {
        let (source, count, samples) = match &r.event.kind {
            sosdesk::events::CallEventKind::Refused { source, count, samples, addresses, .. } => {
                let source = if *addresses > 1 { format!("{source} ({addresses} addresses)") } else { source.clone() };
                (source, *count, samples.clone())
            }
            _ => (r.event.caller.source.clone(), 1, vec![format!("{} {}", r.event.dialed, r.detail)]),
        };
        println!(
            "{:<20} {:<40} {:>8}  {}",
            r.at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
            clean(&source, 40),
            count,
            clean(&r.detail, 200)
        );
        for s in samples {
            println!("{:<70}  e.g. {}", "", clean(&s, 200));
        }
    }
}

fn print_history(calls: &[sosdesk::audit::CallSummary]) {
    if calls.is_empty() {
        println!("no calls recorded");
        return;
    }
    println!(
        "{:<20} {:<24} {:<8} {:<10} {:<40} {:<14} OUTCOME",
        "TIME (local)", "CALLER", "DIALED", "CALLBACK", "LOCATION", "ROUTE"
    );
    for c in calls {
        let name = c.caller_name.clone().unwrap_or_default();
        println!(
            "{:<20} {:<24} {:<8} {:<10} {:<40} {:<14} {}{}",
            c.first_at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S"),
            clean(&name, 24),
            clean(&c.dialed, 8),
            clean(&c.caller_number, 10),
            clean(&c.location, 40),
            clean(c.route.as_deref().unwrap_or("-"), 14),
            c.outcome.as_str(),
            if c.test_call { " (test)" } else { "" }
        );
    }
}
