//! Two core nodes on one PostgreSQL database (issue 14, item 3): what one node did, the other
//! knows. Each node is a whole `Core` (the lab) on its own loopback ports; they share nothing
//! but the database.

use crate::support::lab::Lab;
use crate::support::store::TestDb;
use sosdesk::api::client::ApiClient;
use sosdesk::events::{CallEvent, CallEventKind};

/// The lab's config on `db`, this node named `node`.
fn on(db: &TestDb, node: &str, config: &str) -> String {
    let text = db.set_store(config);
    text.replacen("[store]\n", &format!("[store]\nnode = {node:?}\n"), 1)
}

#[test]
fn an_elin_callback_through_node_b_reaches_the_caller_of_a_call_routed_by_node_a() {
    let db = TestDb::postgres();
    let mut a = Lab::start_with(|c| on(&db, "a", &c));
    let mut b = Lab::start_with(|c| on(&db, "b", &c));

    // Node A routes the warehouse's call (127.0.0.4) through its ELIN gateway.
    let gw = a.uas("gw", "elin_gateway.xml", "127.0.0.1", a.ports.elin, &[]);
    let caller_port = crate::support::lab::free_port();
    let cp = caller_port.to_string();
    a.uac(
        "caller",
        "caller_hangs_up.xml",
        "127.0.0.4",
        &["-set", "hold_ms", "100", "-s", "911", "-set", "from_user", "2002", "-p", &cp],
    )
    .wait()
    .assert_ok();
    let g = gw.wait();
    g.assert_ok();
    assert_eq!(g.logged("invite.from_user").as_deref(), Some("4255550199"));
    // Node A goes down (its last mappings are in the store when it has stopped).
    a.stop();

    // The PSAP calls the ELIN back through node B, which never saw the call.
    let callee = b.uas("callee", "callee_answer.xml", "127.0.0.4", caller_port, &[]);
    b.uac("psap", "psap_callback.xml", "127.0.0.1", &["-s", "4255550199"]).wait().assert_ok();
    let c = callee.wait();
    c.assert_ok();
    assert!(c.received_request("INVITE").starts_with(&format!("INVITE sip:2002@127.0.0.4:{caller_port} SIP/2.0")));
    b.stop();
    // The whole record, both nodes' rows.
    b.db = Some(db);
    let events = b.audit_events();
    let cb = events.iter().find(|e| e.kind.name() == "callback").expect("callback event");
    assert!(matches!(&cb.kind, CallEventKind::Callback { elin, to_original: true, .. } if elin == "4255550199"));
    b.assert_audit_verifies();
}

/// Issue 14: a pooled ELIN is claimed in the store, so a node never hands out an ELIN another
/// node's caller holds (the PSAP's callback would reach only one of the two).
#[test]
fn two_nodes_give_two_callers_at_one_location_two_different_elins() {
    let db = TestDb::postgres();
    let a = Lab::start_with(|c| on(&db, "a", &c));
    let b = Lab::start_with(|c| on(&db, "b", &c));
    let call = |lab: &Lab, from_user: &str| -> (String, u16) {
        let gw = lab.uas("gw", "elin_gateway.xml", "127.0.0.1", lab.ports.elin, &[]);
        let port = crate::support::lab::free_port();
        let p = port.to_string();
        lab.uac(
            "caller",
            "caller_hangs_up.xml",
            "127.0.0.4",
            &["-set", "hold_ms", "100", "-s", "911", "-set", "from_user", from_user, "-p", &p],
        )
        .wait()
        .assert_ok();
        let g = gw.wait();
        g.assert_ok();
        (g.logged("invite.from_user").expect("the gateway's INVITE"), port)
    };
    // The warehouse ERL has two ELINs. A's caller takes the first; its mapping stays live for
    // the callback window after the call. B has no mapping of its own: without the claim it
    // would hand out the same ELIN.
    let (first, first_port) = call(&a, "2002");
    let (second, second_port) = call(&b, "2003");
    assert_eq!(first, "4255550199");
    assert_eq!(second, "4255550198", "node B gave the ELIN node A's caller holds");
    assert_eq!(
        psql(&db, "SELECT elin || ' ' || caller_number || ' ' || node FROM elin_callbacks ORDER BY elin"),
        "4255550198 2003 b\n4255550199 2002 a"
    );
    // Each callback, through either node, reaches its own caller.
    for (lab, elin, port) in [(&b, "4255550199", first_port), (&a, "4255550198", second_port)] {
        let callee = lab.uas("callee", "callee_answer.xml", "127.0.0.4", port, &[]);
        lab.uac("psap", "psap_callback.xml", "127.0.0.1", &["-s", elin]).wait().assert_ok();
        let c = callee.wait();
        c.assert_ok();
        assert!(c.received_request("INVITE").starts_with(&format!(
            "INVITE sip:{}@127.0.0.4:{port} SIP/2.0",
            if elin == "4255550199" { "2002" } else { "2003" }
        )));
    }
}

/// The `call-event`s on `stream` up to the first that matches (within 20 s).
async fn until(
    stream: &mut sosdesk::api::client::EventStream,
    what: &str,
    pred: impl Fn(&CallEvent) -> bool,
) -> Vec<CallEvent> {
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let ev = stream.next().await.unwrap_or_else(|e| panic!("{what}: {e}")).expect("the stream ended");
            if ev.event != "call-event" {
                continue;
            }
            let ev: CallEvent = serde_json::from_str(&ev.data).unwrap();
            let done = pred(&ev);
            seen.push(ev);
            if done {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), wait).await.unwrap_or_else(|_| panic!("no {what}"));
    seen
}

#[test]
fn a_call_on_node_a_and_its_acknowledgement_on_node_b_reach_both_nodes_event_streams() {
    let db = TestDb::postgres();
    let a = Lab::start_with(|c| on(&db, "a", &c));
    let b = Lab::start_with(|c| on(&db, "b", &c));
    let client = |lab: &Lab, user: &str, password: &str| {
        ApiClient::new(&format!("http://127.0.0.1:{}", lab.ports.api), user, password, None).unwrap()
    };
    let (on_a, on_b) = (client(&a, "desk1", "lobby-desk-secret"), client(&b, "desk2", "control-room-secret"));
    let (mut stream_a, mut stream_b) =
        b.rt.block_on(async { (on_a.events().await.unwrap(), on_b.events().await.unwrap()) });

    // A call through node A: node B's desks see it, from detection to its end.
    let provider = a.uas("provider", "provider_answer.xml", "127.0.0.1", a.ports.primary, &[]);
    a.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    let on_b_seen =
        b.rt.block_on(until(&mut stream_b, "node A's call on node B", |e| e.kind == CallEventKind::Detected));
    let id = on_b_seen.last().unwrap().call_id.clone();
    b.rt.block_on(until(&mut stream_b, "node A's call's end on node B", |e| {
        e.call_id == id && e.kind.name() == "ended"
    }));

    // The officer at a desk of node B acknowledges it: node A's desks see who took it.
    let ack = b.rt.block_on(on_b.acknowledge(&id, "Officer Dana Test")).unwrap();
    let on_a_seen = a.rt.block_on(until(&mut stream_a, "node B's acknowledgement on node A", |e| {
        e.call_id == id && matches!(e.kind, CallEventKind::Acknowledged { .. })
    }));
    let seen = on_a_seen.last().unwrap();
    assert_eq!((seen.seq, &seen.kind), (ack.seq, &ack.kind));
    // Node A's desk saw its own call once: its node's rows do not come back through the store.
    let detections = on_a_seen.iter().filter(|e| e.kind == CallEventKind::Detected).count();
    assert_eq!(detections, 1, "{:?}", on_a_seen.iter().map(|e| e.kind.name()).collect::<Vec<_>>());
}

#[test]
fn a_desk_registered_through_node_a_gets_the_alert_of_a_call_through_node_b() {
    let db = TestDb::postgres();
    let a = Lab::start_notifying(|c| on(&db, "a", &c));
    let b = Lab::start_notifying(|c| on(&db, "b", &c));
    // The lobby desk registers (UDP) with node A only.
    let port = crate::support::lab::free_port();
    let desk = a.uas("desk1", "notify_receiver.xml", "127.0.0.1", port, &[]);
    let p = port.to_string();
    let register = ["-s", "desk1", "-au", "desk1", "-ap", "lobby-desk-secret", "-set", "cport", &p];
    a.uac("register-desk1", "register.xml", "127.0.0.1", &register).wait().assert_ok();

    // A call through node B: its alert reaches the desk. (Whichever comes first at node B, the
    // call or the registration, the alert waits for the desk's registration as on one node.)
    let _phone = b.uas("phone", "notify_receiver.xml", "127.0.0.1", b.ports.fallback, &[]);
    let provider = b.uas("provider", "provider_answer.xml", "127.0.0.1", b.ports.primary, &[]);
    b.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    let r = desk.wait();
    r.assert_ok();
    let msg = r.received_request("MESSAGE");
    assert!(msg.starts_with(&format!("MESSAGE sip:desk1@127.0.0.1:{port} SIP/2.0\r\n")), "{msg}");
}

/// Takes the audit chain's lock on `db` as a node's audit writer does (through sosdesk's own
/// store, so with its session settings) and holds it, saying nothing more on its connection,
/// until `release` is sent or dropped (then rolled back), or the runtime ends.
fn hold_the_chain(lab: &Lab, db: &TestDb) -> tokio::sync::oneshot::Sender<()> {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (held, taken) = std::sync::mpsc::channel();
    let location = db.location();
    lab.rt.spawn(async move {
        let store = sosdesk::db::open(&location).await.unwrap();
        let tx = store.begin_write("chain_head").await.unwrap();
        held.send(()).unwrap();
        let _ = released.await;
        let _ = tx.rollback().await;
    });
    taken.recv().expect("the chain's lock taken");
    release
}

/// The database and name of a PostgreSQL test store, for psql.
fn psql(db: &TestDb, sql: &str) -> String {
    match db {
        TestDb::Postgres { server, db } => server.psql(db, sql),
        TestDb::Sqlite { .. } => unreachable!("two nodes share a PostgreSQL store"),
    }
}

#[test]
fn a_second_node_with_the_name_of_a_live_node_is_refused_at_start() {
    let db = TestDb::postgres();
    let mut a = Lab::start_with(|c| on(&db, "a", &c));
    // Another core configured with the same name, on the same database.
    let twin = crate::support::lab::LabFiles::write(|c| on(&db, "a", &c));
    let cfg = sosdesk::config::Config::load(&twin.config_path).unwrap();
    let refused = a.rt.block_on(sosdesk::server::Core::start(&cfg)).err().expect("a second node \"a\" must not start");
    assert_eq!(
        refused.to_string(),
        "another node named \"a\" is running on this store: give each node its own [store] node (default: the host name)"
    );
    // Node A went on: a call through it is routed.
    let provider = a.uas("provider", "provider_answer.xml", "127.0.0.1", a.ports.primary, &[]);
    a.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    // Once A has stopped, its name is free: a node "a" starts (e.g. A restarted elsewhere).
    a.stop();
    let again = a.rt.block_on(sosdesk::server::Core::start(&cfg)).unwrap_or_else(|e| panic!("node a again: {e}"));
    a.rt.block_on(again.stop());
}

/// A PostgreSQL restart or failover ends the session that holds a node's name: the node claims
/// it again on a new session, so a second node of that name is refused again.
#[test]
fn a_node_claims_its_name_again_when_the_store_ended_its_session() {
    let db = TestDb::postgres();
    let a = Lab::start_with(|c| on(&db, "a", &c));
    let holder = || psql(&db, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted");
    let first = holder();
    assert!(!first.is_empty(), "node a holds no name lock");
    // The server ends that session (as a restart would).
    assert_eq!(psql(&db, &format!("SELECT pg_terminate_backend({first})")), "t");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = holder();
        if !now.is_empty() && now != first {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node a did not claim its name again within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Claimed again: a twin is refused.
    let twin = crate::support::lab::LabFiles::write(|c| on(&db, "a", &c));
    let cfg = sosdesk::config::Config::load(&twin.config_path).unwrap();
    let refused = a.rt.block_on(sosdesk::server::Core::start(&cfg)).err().expect("a second node \"a\" must not start");
    assert!(refused.to_string().starts_with("another node named \"a\" is running"), "{refused}");
}

#[test]
fn a_node_cut_off_while_it_holds_the_audit_chain_does_not_stall_the_others_audit_for_ever() {
    let db = TestDb::postgres();
    let mut b = Lab::start_with(|c| on(&db, "b", &c));
    // A node opens its store as every node does, takes the chain's lock for an audit write, and
    // is then cut off: it never says another word on that connection.
    let cut_off = hold_the_chain(&b, &db);
    // A call through node B meanwhile: routed at once (the engine never waits for the store) ...
    let provider = b.uas("provider", "provider_answer.xml", "127.0.0.1", b.ports.primary, &[]);
    b.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    // ... and its events are committed once the server has ended the silent node's session
    // (idle in its transaction): B's stop waits for its last events to be durable.
    let core = b.core.take().unwrap();
    b.rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(90), core.stop()).await })
        .expect("node B's audit writes stalled behind the cut-off node's lock");
    let written = psql(&db, "SELECT count(*) FROM events WHERE node = 'b' AND kind = 'ended'");
    assert_eq!(written, "1", "node B's call is in the log");
    drop(cut_off);
    b.db = Some(db);
    b.assert_audit_verifies();
}

#[test]
fn an_acknowledgement_through_the_node_that_does_not_carry_the_live_call_is_numbered_by_the_one_that_does() {
    let db = TestDb::postgres();
    let mut a = Lab::start_with(|c| on(&db, "a", &c));
    let mut b = Lab::start_with(|c| on(&db, "b", &c));
    let on_b =
        ApiClient::new(&format!("http://127.0.0.1:{}", b.ports.api), "desk2", "control-room-secret", None).unwrap();
    let mut stream_b = b.rt.block_on(on_b.events()).unwrap();
    let mut seen_a = Vec::new();

    // A call through node A, up for a few seconds; a desk of node B sees it answered.
    let provider = a.uas("provider", "provider_answer.xml", "127.0.0.1", a.ports.primary, &[]);
    let caller = a.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "4000"]);
    let seen_b =
        b.rt.block_on(until(&mut stream_b, "node A's call answered, on node B", |e| e.kind.name() == "answered"));
    let id = seen_b.last().unwrap().call_id.clone();
    // While it is up, the officer at that desk acknowledges it.
    let ack = b.rt.block_on(on_b.acknowledge(&id, "Officer Dana Test")).unwrap();
    caller.wait().assert_ok();
    provider.wait().assert_ok();
    a.wait_for(&mut seen_a, "the call's end", |e| e.call_id == id && e.kind.name() == "ended");
    a.stop();
    b.stop();

    // One event per number in the call's record, the acknowledgement among them as B answered
    // it, written by node A (which carries the call).
    let rows = psql(
        &db,
        &format!("SELECT call_seq || ' ' || kind || ' ' || node FROM events WHERE call_id = '{id}' ORDER BY seq"),
    );
    let rows: Vec<&str> = rows.lines().collect();
    let mut numbers: Vec<&str> = rows.iter().map(|r| r.split(' ').next().unwrap()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), rows.len(), "two events share a number: {rows:#?}");
    assert!(rows.contains(&format!("{} acknowledged a", ack.seq).as_str()), "{rows:#?}");
    b.db = Some(db);
    b.assert_audit_verifies();
}

#[test]
fn an_acknowledgement_link_posted_to_two_nodes_acknowledges_once() {
    use sosdesk::channels::sign::{ack_token, AckClaim};
    const KEY: &str = "the-one-ack-key-of-every-node-0123456789";
    let with_key = |c: String| format!("{c}\n[alerts]\nack_key = {KEY:?}\n");
    let db = TestDb::postgres();
    let mut a = Lab::start_with(|c| with_key(on(&db, "a", &c)));
    let mut b = Lab::start_with(|c| with_key(on(&db, "b", &c)));
    let provider = a.uas("provider", "provider_answer.xml", "127.0.0.1", a.ports.primary, &[]);
    a.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    let mut seen = Vec::new();
    let id = a.wait_for(&mut seen, "the call's end", |e| e.kind.name() == "ended").call_id;
    let claim = AckClaim {
        call_id: id.clone(),
        target: "mailto:guard@example.org".into(),
        expires: chrono::Utc::now().timestamp() + 600,
    };
    let path = format!("/ack/{}", ack_token(KEY.as_bytes(), &claim));

    // The audit chain is held (another writer's long transaction): neither node's
    // acknowledgement can be committed, so neither can learn of the other's from the log.
    let holder = hold_the_chain(&b, &db);
    let (port_a, port_b) = (a.ports.api, b.ports.api);
    let (pa, pb) = (path.clone(), path.clone());
    let (answers, answer) = std::sync::mpsc::channel();
    let to_b = answers.clone();
    std::thread::spawn(move || answers.send(crate::support::receivers::http("POST", port_a, &pa)));
    std::thread::spawn(move || to_b.send(crate::support::receivers::http("POST", port_b, &pb)));
    // One of the two answers at once that the link was used; the other waits for the chain.
    let (status, page) = answer.recv().unwrap();
    assert_eq!(status, 410, "the same link through the other node: {page}");
    drop(holder);
    let (status, page) = answer.recv().unwrap();
    assert_eq!(status, 200, "{page}");
    a.stop();
    b.stop();
    let acks = psql(&db, &format!("SELECT count(*) FROM events WHERE call_id = '{id}' AND kind = 'acknowledged'"));
    assert_eq!(acks, "1", "one acknowledgement in the record");
}

/// A 911 call from the HQ site through `lab` that the provider answers and the caller hangs up.
fn call_through(lab: &Lab) {
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
}

#[test]
fn the_escalation_of_a_call_whose_node_stopped_is_finished_by_the_other_node_unless_acknowledged() {
    use crate::support::receivers::HttpReceiver;
    use std::time::{Duration, Instant};
    // Tier 1 at once, tier 2 after AFTER_S, tier 3 after twice that: each to its own path.
    const AFTER_S: u64 = 6;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut hooks = HttpReceiver::start(&rt);
    let port = hooks.port;
    let escalating = move |c: String| {
        let policy = format!(
            "name = \"us-hq\"\nchannels = [\"first\"]\nescalation = [{{ after_s = {AFTER_S}, channels = [\"second\"] }}, \
             {{ after_s = {}, channels = [\"third\"] }}]\n",
            2 * AFTER_S
        );
        let mut c = c.replacen("name = \"us-hq\"\n", &policy, 1);
        for tier in ["first", "second", "third"] {
            c += &format!("\n[[channel]]\nname = \"{tier}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/{tier}\"\nsecret = \"webhook-secret-0123456789\"\n");
        }
        c
    };
    let db = TestDb::postgres();
    let mut a = Lab::start_with(|c| escalating(on(&db, "a", &c)));
    let mut b = Lab::start_with(|c| escalating(on(&db, "b", &c)));
    let call_id =
        |r: &crate::support::receivers::Received| serde_json::from_slice::<CallEvent>(&r.body).unwrap().call_id;

    // Call X through node A, acknowledged on A after its tier 1.
    call_through(&a);
    let x = call_id(&hooks.next_to(&rt, "/first"));
    a.rt.block_on(a.core.as_ref().unwrap().acknowledge(&x, "Officer Dana Test")).unwrap();
    // Call Y through node A; once its tier 1 has arrived, node A is stopped (before tier 2).
    // (Counted from before the call: later than that, never earlier, are its tiers due.)
    let detected_y = Instant::now();
    call_through(&a);
    let y = call_id(&hooks.next_to(&rt, "/first"));
    assert_ne!(x, y);
    a.stop();
    assert!(detected_y.elapsed() < Duration::from_secs(AFTER_S), "node A stopped too late for this test");

    // Node B sends Y's tier 2 (X's, due earlier, is not sent: X was acknowledged), at its time.
    let second = hooks.next_to(&rt, "/second");
    assert_eq!(call_id(&second), y, "the first tier 2 sent is the unacknowledged call's");
    assert!(detected_y.elapsed() >= Duration::from_secs(AFTER_S), "tier 2 came before its time");
    let mut seen = Vec::new();
    b.wait_for(&mut seen, "Y's tier 2 audited by node B", |e| {
        e.call_id == y && matches!(e.kind, CallEventKind::Escalated { tier: 2, .. })
    });
    // An acknowledgement (through node B, the only one left) stops the adopted escalation:
    // tier 3 never comes (waited for past its time and a look more).
    b.rt.block_on(b.core.as_ref().unwrap().acknowledge(&y, "Officer Dana Test")).unwrap();
    let until = detected_y + Duration::from_secs(2 * AFTER_S + 3);
    while let Some(r) = hooks.next(&rt, until.saturating_duration_since(Instant::now())) {
        assert!(!r.target.starts_with("/third"), "tier 3 was alerted after the acknowledgement");
        assert!(!r.target.starts_with("/second"), "another tier 2: {}", call_id(&r));
    }
    b.stop();

    // Y's tiers in its record: 1 by node A, 2 by node B; B's claim; nothing adopted of X.
    let escalated = |id: &str| {
        psql(
            &db,
            &format!(
                "SELECT (payload::json->'kind'->>'tier') || ' ' || node FROM events \
                 WHERE call_id = '{id}' AND kind = 'escalated' ORDER BY seq"
            ),
        )
    };
    assert_eq!(escalated(&y), "1 a\n2 b");
    assert_eq!(escalated(&x), "1 a");
    let claims = psql(&db, "SELECT call_id || ' ' || node FROM escalation_adoptions ORDER BY call_id");
    assert_eq!(claims, format!("{y} b"));
    // One event per number in Y's record, though two nodes wrote it.
    let numbers = psql(&db, &format!("SELECT count(*) = count(DISTINCT call_seq) FROM events WHERE call_id = '{y}'"));
    assert_eq!(numbers, "t");
    b.db = Some(db);
    b.assert_audit_verifies();
}

// ---------------------------------------------------------------------------------------------
// ELIN claims in the store (`sosdesk::shared::callbacks::CallbackStore::claim`), on both backends

fn claim_for(call_ref: &str, candidates: &[&str], expires_in_s: i64) -> sosdesk::routing::ElinClaim {
    sosdesk::routing::ElinClaim {
        candidates: candidates.iter().map(|e| e.to_string()).collect(),
        mapping: sosdesk::routing::SharedElin {
            elin: String::new(),
            call_ref: call_ref.into(),
            caller_number: format!("n-{call_ref}"),
            caller_display: None,
            caller_peer: sosdesk::sip::transaction::Peer {
                transport: sosdesk::sip::transaction::Transport::Udp,
                addr: "127.0.0.4:5062".parse().unwrap(),
            },
            caller_reconnect: None,
            expires: chrono::Utc::now() + chrono::Duration::seconds(expires_in_s),
        },
    }
}

crate::support::store::store_test!(a_tls_callers_mapping_keeps_where_to_reconnect);
/// A mapping of a caller over TLS keeps, through the store, the connection its call came over
/// and where a callback connects anew (with the name the certificate there must carry); one
/// over UDP has no such address.
async fn a_tls_callers_mapping_keeps_where_to_reconnect(db: TestDb) {
    use sosdesk::sip::transaction::{Peer, Reconnect, Transport};
    let audit = sosdesk::audit::AuditStore::open(db.location()).await.unwrap();
    let store = sosdesk::shared::callbacks::CallbackStore::new(audit.database().clone(), Some("a"));
    let tls = |a: &str| Peer { transport: Transport::Tls, addr: a.parse().unwrap() };
    let over_tls = sosdesk::routing::SharedElin {
        elin: "4255550199".into(),
        caller_peer: tls("[2001:db8::4]:40001"),
        caller_reconnect: Some(Reconnect {
            peer: tls("[2001:db8::4]:5061"),
            name: Some("medsrv.contoso.example".into()),
        }),
        ..claim_for("c1", &[], 3600).mapping
    };
    store.put(&over_tls).await.unwrap();
    let mut got = store.get("4255550199").await.unwrap().expect("the mapping");
    got.expires = over_tls.expires; // (kept to the millisecond)
    assert_eq!(got, over_tls);
    let over_udp = sosdesk::routing::SharedElin { elin: "4255550198".into(), ..claim_for("c2", &[], 3600).mapping };
    store.put(&over_udp).await.unwrap();
    assert_eq!(store.get("4255550198").await.unwrap().unwrap().caller_reconnect, None);
    // A node of the version before these columns rewrites the row for another caller (its
    // statement does not name them): the earlier caller's address is not taken for the new one's.
    let sql = audit.database().backend.sql(
        "UPDATE elin_callbacks SET call_ref = 'c3', caller_transport = 'UDP', caller_addr = '127.0.0.9:5060' WHERE elin = ?",
    );
    sqlx::query(&sql).bind("4255550199").execute(&audit.database().pool).await.unwrap();
    let rewritten = store.get("4255550199").await.unwrap().unwrap();
    assert_eq!((rewritten.call_ref.as_str(), rewritten.caller_reconnect), ("c3", None));
}

crate::support::store::store_test!(an_elin_claim_gives_each_live_call_its_own_elin);
async fn an_elin_claim_gives_each_live_call_its_own_elin(db: TestDb) {
    use sosdesk::shared::callbacks::CallbackStore;
    let audit = sosdesk::audit::AuditStore::open(db.location()).await.unwrap();
    let a = CallbackStore::new(audit.database().clone(), Some("a"));
    let two = ["4255550199", "4255550198"];
    assert_eq!(a.claim(&claim_for("c1", &two, 3600)).await.unwrap(), "4255550199");
    assert_eq!(a.claim(&claim_for("c2", &two, 3601)).await.unwrap(), "4255550198");
    // A retry of c1 (its node's order puts its own ELIN first, but any order finds it free).
    assert_eq!(a.claim(&claim_for("c1", &["4255550198", "4255550199"], 3600)).await.unwrap(), "4255550199");
    // Both held by live calls: the oldest mapping (c1's, ending first) is taken over.
    assert_eq!(a.claim(&claim_for("c3", &two, 3602)).await.unwrap(), "4255550199");
    assert_eq!(a.get("4255550199").await.unwrap().unwrap().call_ref, "c3");
    assert_eq!(a.get("4255550198").await.unwrap().unwrap().call_ref, "c2");
    // An expired mapping is free.
    a.put(&sosdesk::routing::SharedElin { elin: "4255550100".into(), ..claim_for("old", &[], -1).mapping })
        .await
        .unwrap();
    assert_eq!(a.claim(&claim_for("c4", &["4255550100"], 3600)).await.unwrap(), "4255550100");

    // Sixteen callers at once through two stores of their own (two nodes' pools), all preferring
    // the same ELIN first: sixteen different ELINs.
    let other = sosdesk::audit::AuditStore::open(db.location()).await.unwrap();
    let b = CallbackStore::new(other.database().clone(), Some("b"));
    let pool: Vec<String> = (0..16).map(|i| format!("42555501{i:02}x")).collect();
    let pool: Vec<&str> = pool.iter().map(String::as_str).collect();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let claim = claim_for(&format!("burst-{i}"), &pool, 3600);
        tasks.push(tokio::spawn(async move { store.claim(&claim).await.unwrap() }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 16, "two callers were given one ELIN: {got:?}");
}
