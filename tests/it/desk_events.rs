//! What a desk adds to a call through the core (`Core::acknowledge`), and the history search a
//! desk reads: against the real core, sipp as caller and provider, and the real audit store (a
//! SQLite file and PostgreSQL).

use crate::support;

use sosdesk::audit::{AuditStore, CallOutcome, HistoryQuery};
use sosdesk::events::CallEventKind;
use sosdesk::server::AnnotateError;
use support::lab::Lab;
use support::store::{store_test, TestDb};

store_test!(sync acknowledgements_join_the_call_sequence_live_and_after_the_end);
fn acknowledgements_join_the_call_sequence_live_and_after_the_end(db: TestDb) {
    let mut lab = Lab::start_on(db, |c| c);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac(
        "caller",
        "caller_hangs_up.xml",
        "127.0.0.1",
        &["-s", "911", "-set", "hold_ms", "3000", "-set", "name", "Ann 100%_"],
    );

    // While the call is up: wait (on the core's own events) for the answer, then acknowledge.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let answered = loop {
        seen.extend(lab.broadcast_events());
        if let Some(ev) = seen.iter().find(|e| e.kind == CallEventKind::Answered) {
            break ev.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no Answered event: {seen:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let core = lab.core.as_ref().unwrap();
    let live = lab.rt.block_on(core.acknowledge(&answered.call_id, "Officer A")).unwrap();
    assert_eq!(live.seq, answered.seq + 1, "numbered in the live call's sequence");
    assert_eq!(live.kind, CallEventKind::Acknowledged { by: "Officer A".into(), desk: String::new() });
    assert_eq!(live.caller, answered.caller, "self-contained: it carries the call's picture");

    caller.wait().assert_ok();
    provider.wait().assert_ok();
    // After the end the engine no longer holds the call: numbered from the audit log.
    let core = lab.core.as_ref().unwrap();
    let late = lab.rt.block_on(core.acknowledge(&answered.call_id, "Officer B")).unwrap();
    let unknown = lab.rt.block_on(core.acknowledge("no-such-call", "Officer C"));
    assert!(matches!(unknown, Err(AnnotateError::UnknownCall(_))), "{unknown:?}");
    // Both reached the desks too.
    seen.extend(lab.broadcast_events());
    assert!(seen
        .iter()
        .any(|e| e.seq == late.seq && matches!(&e.kind, CallEventKind::Acknowledged { by, .. } if by == "Officer B")));

    lab.stop();
    let events = lab.audit_events();
    let seqs: Vec<u32> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u32).collect::<Vec<_>>(), "no gap, no duplicate");
    assert_eq!(events.last().unwrap().seq, late.seq);
    assert_eq!(events[(live.seq - 1) as usize], live, "stored as it was broadcast");
    lab.assert_audit_verifies();

    lab.rt.block_on(async {
        let store = AuditStore::open(lab.store_location()).await.unwrap();
        let s = store.call_summary(&answered.call_id).await.unwrap().unwrap();
        assert_eq!(s.acknowledged_by.as_deref(), Some("Officer A"), "the first acknowledgement silenced it");
        assert_eq!(s.outcome, CallOutcome::Ended);

        // History search: a typed % or _ matches itself, not "anything".
        let find = |text: &str| HistoryQuery { text: Some(text.into()), limit: 10, ..Default::default() };
        assert_eq!(store.search(&find("100%_")).await.unwrap().len(), 1);
        assert_eq!(store.search(&find("ann")).await.unwrap().len(), 1, "case-insensitive");
        assert!(store.search(&find("1%0")).await.unwrap().is_empty());
        assert!(store.search(&find("_nn")).await.unwrap().is_empty());
        let ended = HistoryQuery { outcome: Some(CallOutcome::Ended), limit: 10, ..Default::default() };
        assert_eq!(store.search(&ended).await.unwrap().len(), 1);
        let failed = HistoryQuery { outcome: Some(CallOutcome::Failed), limit: 10, ..Default::default() };
        assert!(store.search(&failed).await.unwrap().is_empty());
        let later =
            HistoryQuery { from: Some(s.first_at + chrono::Duration::seconds(1)), limit: 10, ..Default::default() };
        assert!(store.search(&later).await.unwrap().is_empty());
        let until =
            HistoryQuery { until: Some(s.first_at + chrono::Duration::seconds(1)), limit: 10, ..Default::default() };
        assert_eq!(store.search(&until).await.unwrap().len(), 1);
        store.close().await;
    });
}
