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
