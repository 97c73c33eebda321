//! `sosdesk-desk`: the security desk app. `sosdesk-desk --config examples/lab.toml`.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::path::PathBuf;

const USAGE: &str = "usage: sosdesk-desk [--config <sosdesk.toml>]

Runs the sosdesk security desk: the emergency routing core, in-process, with its alerts,
alarm and call history on screen. The config path is remembered for the next start.
Headless (no display): run the core alone with `sosdesk serve --config <file>`.";

fn main() {
    // First: while this process has one thread, before GTK or WebKit start.
    sosdesk_desk::webview::prefer_software_compositing();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tao=warn,wry=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut opts = sosdesk_desk::Options::default();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config") | Some("-c") => match args.next() {
                Some(p) => opts.config = Some(PathBuf::from(p)),
                None => fail("--config needs a file"),
            },
            Some(s) if s.starts_with("--config=") => opts.config = Some(PathBuf::from(&s["--config=".len()..])),
            Some("--help") | Some("-h") => {
                println!("{USAGE}");
                return;
            }
            _ => fail(&format!("unknown argument {:?}", a)),
        }
    }
    if let Some(p) = &opts.config {
        if !p.is_file() {
            fail(&format!("config file {} does not exist", p.display()));
        }
    }
    // GTK cannot start without a display and would abort with a panic: say it plainly instead.
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()));
    if !has_display {
        eprintln!(
            "sosdesk-desk: no display (neither DISPLAY nor WAYLAND_DISPLAY is set), so the desk app cannot open its window.\n\
             To run the emergency routing core without a screen: sosdesk serve --config <file>\n\
             (./run.sh serve --config examples/lab.toml from the repository)."
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("sosdesk-desk: internal error: {msg}{at}");
        if msg.contains("display") || msg.contains("gtk") || msg.contains("GTK") {
            eprintln!("sosdesk-desk: the display could not be opened; headless: sosdesk serve --config <file>");
        }
    }));
    sosdesk_desk::run(opts);
}

fn fail(msg: &str) -> ! {
    eprintln!("sosdesk-desk: {msg}\n\n{USAGE}");
    std::process::exit(2);
}
