//! Site maps (issue 16 item 4): georeferenced images set, listed and cleared from the command line
//! in both stores, bad edges and hostile images refused; a call whose PIDF-LO has a point gets the
//! point's place on the smallest map that has it in its events (the API's event stream and the
//! audit log), and the map's image is served by the floor-plan endpoint.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::Digest;
use sosdesk::api::client::ApiClient;
use sosdesk::events::{CallEvent, CallEventKind};
use sosdesk::location::floorplan::check_image;
use sosdesk::location::sitemap::Bounds;
use sosdesk::location::store::{LisStore, NewPin};
use support::lab::Lab;
use support::store::{store_test, TestDb};

/// A campus map drawn at the proportions of [`CAMPUS`] in Web Mercator (about 450 m × 334 m).
pub const CAMPUS_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="674" height="500" viewBox="0 0 674 500">
  <rect width="674" height="500" fill="#eef2e6"/>
  <rect x="200" y="150" width="274" height="200" fill="#c8c2b4" stroke="#555" stroke-width="3"/>
  <text x="230" y="190" font-size="24">Building 4</text>
  <path d="M0 420 H674" stroke="#fff" stroke-width="18"/>
</svg>
"##;

/// The edges of [`CAMPUS_SVG`]: north, south, west, east. `caller_pidf_geo.xml`'s point
/// (47.6445, −122.131) is at its centre.
pub const CAMPUS: [&str; 4] = ["47.6460", "47.6430", "-122.1340", "-122.1280"];

const HEADER: &str = "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,\
StreetSuffix,PostDirectional,City,State,PostalCode,Country,Floor,Room";

const HOSTILE_SVG: &str =
    r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>"#;

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

fn set_args<'a>(name: &'a str, image: &'a str, edges: [&'a str; 4]) -> Vec<&'a str> {
    let [n, s, w, e] = edges;
    vec![
        "lis", "sitemap", "set", "--name", name, "--image", image, "--north", n, "--south", s, "--west", w, "--east", e,
    ]
}

store_test!(site_maps_are_stored_shared_with_floor_plans_and_cleared);
async fn site_maps_are_stored_shared_with_floor_plans_and_cleared(db: TestDb) {
    let lis = LisStore::open(db.location()).await.unwrap();
    let image = check_image(CAMPUS_SVG.as_bytes().to_vec()).unwrap();
    let campus = Bounds::new(47.646, 47.643, -122.134, -122.128).unwrap();
    let g0 = lis.generation().await.unwrap();
    lis.set_site_map("HQ campus", &image, campus).await.unwrap();
    assert!(lis.generation().await.unwrap() > g0, "a running core must reload");
    let maps = lis.list_site_maps().await.unwrap();
    assert_eq!(maps.len(), 1);
    let m = &maps[0];
    assert_eq!(
        (m.name.as_str(), m.plan.as_str(), m.north, m.south, m.west, m.east, m.media_type.as_str(), m.bytes),
        (
            "HQ campus",
            sha256(CAMPUS_SVG.as_bytes()).as_str(),
            47.646,
            47.643,
            -122.134,
            -122.128,
            "image/svg+xml",
            CAMPUS_SVG.len() as i64
        )
    );
    // The image is where the floor-plan endpoint reads.
    let (_, bytes) = lis.floor_plan_image(&m.plan).await.unwrap().unwrap();
    assert_eq!(bytes, CAMPUS_SVG.as_bytes());
    // The store's CHECKs hold edges that are not a map out whatever writes them.
    let plan = sha256(CAMPUS_SVG.as_bytes());
    for bad in [
        "INSERT INTO site_maps VALUES ('x', '{plan}', 47.0, 48.0, 0.0, 1.0)",
        "INSERT INTO site_maps VALUES ('x', '{plan}', 89.0, 48.0, 0.0, 1.0)",
        "INSERT INTO site_maps VALUES ('x', '{plan}', 48.0, 47.0, 170.0, -170.0)",
    ] {
        let bad = bad.replace("{plan}", &plan);
        let mut conn = db.raw().await;
        assert!(sqlx::query(&bad).execute(&mut conn).await.is_err(), "{bad}");
    }
    // (The same statement with edges that make a map goes through.)
    db.exec(&[
        &format!("INSERT INTO site_maps VALUES ('ok', '{plan}', 48.0, 47.0, 0.0, 1.0)"),
        "DELETE FROM site_maps WHERE name = 'ok'",
    ])
    .await;
    // What the core loads places points.
    let loaded = lis.load_site_maps().await.unwrap();
    let g = sosdesk::location::GeoPoint { latitude: 47.6445, longitude: -122.131, altitude_m: None, radius_m: None };
    assert_eq!(loaded.place(&g).unwrap().map, "HQ campus");

    // Setting the same name again replaces its edges; a bigger map of the same image is stored
    // once.
    let town = Bounds::new(47.70, 47.60, -122.20, -122.00).unwrap();
    lis.set_site_map("HQ campus", &image, Bounds { north: 47.647, ..campus }).await.unwrap();
    lis.set_site_map("Town", &image, town).await.unwrap();
    let maps = lis.list_site_maps().await.unwrap();
    assert_eq!(
        maps.iter().map(|m| (m.name.as_str(), m.north)).collect::<Vec<_>>(),
        [("HQ campus", 47.647), ("Town", 47.70)]
    );
    assert_eq!(db.count("floor_plans").await, 1);

    // An image that is both an ERL's floor plan and a site map stays while either uses it.
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "s.csv",
        &format!("{HEADER}\n10.1.0.0/24,East,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,301\n"),
    );
    let out = sosdesk(&["lis", "import", &csv, "--kind", "subnets"], &db.store_arg());
    assert!(out.status.success(), "{}", text(&out));
    lis.set_floor_plan(1, NewPin { image: &image, x: 0.5, y: 0.5 }).await.unwrap();
    assert!(lis.clear_site_map("HQ campus").await.unwrap());
    assert!(lis.clear_site_map("Town").await.unwrap());
    assert_eq!((db.count("site_maps").await, db.count("floor_plans").await), (0, 1));
    assert!(!lis.clear_site_map("Town").await.unwrap(), "nothing left to clear");
    lis.set_site_map("Town", &image, town).await.unwrap();
    assert!(lis.clear_floor_plan(1).await.unwrap());
    assert_eq!(db.count("floor_plans").await, 1, "the site map still uses the image");
    assert!(lis.clear_site_map("Town").await.unwrap());
    assert_eq!(db.count("floor_plans").await, 0, "the image goes with its last use");

    lis.close().await;
}

store_test!(a_site_map_is_set_listed_refused_and_cleared_from_the_command_line);
async fn a_site_map_is_set_listed_refused_and_cleared_from_the_command_line(db: TestDb) {
    let store = db.store_arg();
    let dir = tempfile::tempdir().unwrap();
    let map = write(dir.path(), "campus.svg", CAMPUS_SVG);
    let id = sha256(CAMPUS_SVG.as_bytes());

    let out = sosdesk(&set_args("HQ campus", &map, CAMPUS), &store);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "site map \"HQ campus\": {id} (image/svg+xml, {} bytes, 674×500), north 47.646, south 47.643, \
             west -122.134, east -122.128 (about 450 m × 334 m)",
            CAMPUS_SVG.len()
        )
    );

    // An image at other proportions than its edges is stored, with a warning that says so.
    let wide = CAMPUS_SVG.replace(r#"width="674" height="500""#, r#"width="1000" height="500""#);
    let wide = write(dir.path(), "wide.svg", &wide);
    let out = sosdesk(&set_args("Wide", &wide, CAMPUS), &store);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("warning: the image is 1000×500 (width ÷ height 2.00) but the edges make a map 1.35 times"),
        "{}",
        text(&out)
    );

    let out = sosdesk(&["lis", "sitemap", "list"], &store);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].ends_with("IMAGE"), "{table}");
    assert!(
        lines[1].starts_with("HQ campus ") && lines[1].contains(" 47.646000 ") && lines[1].ends_with(&id),
        "{table}"
    );
    assert!(lines[1].contains(" -122.134000 ") && lines[1].contains(" image/svg+xml "), "{table}");
    assert!(lines[2].starts_with("Wide "), "{table}");
    let out = sosdesk(&["lis", "sitemap", "list", "--json"], &store);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json[0]["name"], "HQ campus");
    assert_eq!(json[0]["plan"], id.as_str());
    assert_eq!(json[0]["west"], -122.134);
    assert_eq!(json[1]["name"], "Wide");

    // Bad edges, a hostile or fake image, a name that is none: refused, saying why, nothing
    // stored.
    let hostile = write(dir.path(), "hostile.svg", HOSTILE_SVG);
    let fake_png = dir.path().join("fake.png");
    std::fs::write(&fake_png, b"\x89PNG\r\n\x1a\n<script>alert(1)</script>").unwrap();
    let fake_png = fake_png.to_str().unwrap().to_string();
    for (name, image, edges, why) in [
        (
            "B",
            map.as_str(),
            ["47.6430", "47.6460", "-122.1340", "-122.1280"],
            "--north 47.643 is not north of --south 47.646",
        ),
        (
            "B",
            map.as_str(),
            ["47.6460", "47.6430", "-122.1280", "-122.1340"],
            "--east -122.134 is not east of --west -122.128",
        ),
        ("B", map.as_str(), ["47.6460", "47.6430", "179.9", "-179.9"], "crosses the antimeridian (180°)"),
        (
            "B",
            map.as_str(),
            ["86", "47.6430", "-122.1340", "-122.1280"],
            "--north 86: a latitude must be within ±85.0511°",
        ),
        ("B", map.as_str(), ["NaN", "47.6430", "-122.1340", "-122.1280"], "--north NaN: not a number"),
        (
            "B",
            map.as_str(),
            ["47.6460", "47.6430", "-190", "-122.1280"],
            "--west -190: a longitude must be within ±180°",
        ),
        ("B", hostile.as_str(), CAMPUS, "hostile.svg: SVG refused: line 1: a <script> element"),
        ("B", fake_png.as_str(), CAMPUS, "fake.png: not a valid PNG"),
        (" ", map.as_str(), CAMPUS, "--name: a site map needs a name"),
    ] {
        let out = sosdesk(&set_args(name, image, edges), &store);
        assert!(!out.status.success(), "{why}: {}", text(&out));
        assert!(text(&out).contains(why), "{why} not in {}", text(&out));
    }
    assert_eq!((db.count("site_maps").await, db.count("floor_plans").await), (2, 2));

    let out = sosdesk(&["lis", "sitemap", "clear", "--name", "Wide"], &store);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "site map \"Wide\" cleared");
    let out = sosdesk(&["lis", "sitemap", "clear", "--name", "Wide"], &store);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no site map \"Wide\"");
    assert_eq!((db.count("site_maps").await, db.count("floor_plans").await), (1, 1));
    let out = sosdesk(&["lis", "sitemap", "clear", "--name", "HQ campus"], &store);
    assert!(out.status.success(), "{}", text(&out));
    let out = sosdesk(&["lis", "sitemap", "list"], &store);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no site maps");
    assert_eq!(db.count("floor_plans").await, 0);
}

/// A caller's geodetic PIDF-LO: its events carry the point on the campus map (the smallest of
/// two that have it) — on the API's event stream as on the audit log — and the map's image is
/// served by the floor-plan endpoint. Then a map change reaches the next call without a restart.
#[test]
fn a_geodetic_call_carries_its_place_on_the_smallest_site_map() {
    let mut lab = Lab::start();
    let map = write(lab.dir.path(), "campus.svg", CAMPUS_SVG);
    let town = CAMPUS_SVG.replace("Building 4", "Town");
    let town = write(lab.dir.path(), "town.svg", &town);
    let out = lab.cli_store(&set_args("Town", &town, ["47.70", "47.60", "-122.20", "-122.00"]));
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.cli_store(&set_args("HQ campus", &map, CAMPUS));
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.core.as_ref().unwrap().site_maps().load().len() < 2 {
        assert!(Instant::now() < deadline, "the running core did not load the site maps");
        std::thread::sleep(Duration::from_millis(20));
    }

    let client =
        ApiClient::new(&format!("http://127.0.0.1:{}", lab.ports.api), "desk1", "lobby-desk-secret", None).unwrap();
    let mut stream = lab.rt.block_on(client.events()).unwrap();
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_pidf_geo.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    provider.wait().assert_ok();
    let detected = lab.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let ev = stream.next().await.unwrap().expect("the stream ended");
                if ev.event == "call-event" {
                    let ev = serde_json::from_str::<CallEvent>(&ev.data).unwrap();
                    if ev.kind == CallEventKind::Detected {
                        return ev;
                    }
                }
            }
        })
        .await
        .expect("the call on the event stream")
    });
    let geo = detected.location.geo.expect("the caller's point");
    assert_eq!((geo.latitude, geo.longitude, geo.radius_m), (47.6445, -122.131, Some(25.0)));
    let pin = detected.location.site_map.clone().expect("the point on a site map");
    let id = sha256(CAMPUS_SVG.as_bytes());
    assert_eq!((pin.map.as_str(), pin.plan.as_str()), ("HQ campus", id.as_str()));
    assert!((pin.x - 0.5).abs() < 1e-9, "{pin:?}");
    // The middle latitude, a hair below the middle row (Mercator).
    assert!(pin.y > 0.5 && pin.y < 0.5001, "{pin:?}");
    // 25 m on a map ~450 m wide and ~334 m high.
    let (rx, ry) = (pin.radius_x.unwrap(), pin.radius_y.unwrap());
    assert!((25.0 / rx - 450.0).abs() < 0.5 && (25.0 / ry - 334.0).abs() < 0.5, "{pin:?}");

    lab.rt.block_on(async {
        let (media_type, bytes) = client.floor_plan(&pin.plan).await.unwrap();
        assert_eq!((media_type.as_str(), &bytes[..]), ("image/svg+xml", CAMPUS_SVG.as_bytes()));
    });

    // The campus map taken away: the next call is on the town map, without a restart.
    let out = lab.cli_store(&["lis", "sitemap", "clear", "--name", "HQ campus"]);
    assert!(out.status.success(), "{}", text(&out));
    while lab.core.as_ref().unwrap().site_maps().load().len() != 1 {
        assert!(Instant::now() < deadline + Duration::from_secs(20), "the running core did not reload");
        std::thread::sleep(Duration::from_millis(20));
    }
    let provider = lab.uas("provider2", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller2", "caller_pidf_geo.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    provider.wait().assert_ok();

    lab.stop();
    let events = lab.audit_events();
    let calls: Vec<&CallEvent> = events.iter().filter(|e| e.kind == CallEventKind::Detected).collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].location.site_map.as_ref().map(|p| p.map.as_str()), Some("HQ campus"));
    assert_eq!(calls[0].location.site_map, Some(pin));
    assert_eq!(calls[1].location.site_map.as_ref().map(|p| p.map.as_str()), Some("Town"));
    lab.assert_audit_verifies();
}
