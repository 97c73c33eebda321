//! Two core nodes on one PostgreSQL database (issue 14, item 3): what one node did, the other
//! knows. Each node is a whole `Core` (the lab) on its own loopback ports; they share nothing
//! but the database.

use crate::support::lab::Lab;
use crate::support::store::TestDb;
use sosdesk::events::CallEventKind;

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
