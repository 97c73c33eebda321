//! What the core's task does for the Location Information Service around the engine: records
//! the location outcomes for the unlocated report, reloads the wiremap and site maps when the
//! store's generation moves, keeps locations phones publish, and loads the MSAG validator.
//! Each of these is off the emergency path: a failure is logged and calls go on.

use super::*;
/// Sightings waiting for the recorder; beyond, new ones are dropped (and logged) rather than
/// held in memory: the report is for admins, never on the emergency path.
pub(super) const SIGHTINGS_QUEUE: usize = 4096;

pub(super) fn offer_sighting(tx: &mpsc::Sender<Sighting>, s: Sighting) {
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(s) {
        tracing::warn!("the unlocated report's recorder is behind: a location outcome was not counted");
    }
}

/// At most this many new unlocated networks are announced a minute.
pub(super) const MAX_ANNOUNCED_PER_MINUTE: u32 = 20;

/// Records sightings in the location store, a batch per transaction; an element seen unlocated
/// for the first time becomes an audit record sent to every desk (`unlocated-network`).
pub(super) async fn record_sightings(
    lis: LisStore,
    mut rx: mpsc::Receiver<Sighting>,
    audit: AuditWriter,
    events: broadcast::Sender<Arc<CallEvent>>,
    engine: mpsc::UnboundedSender<NetInput>,
) {
    let mut batch = Vec::new();
    // Announcements per minute: a caller can write any address into its SDP, so a new subnet
    // per call must not become a flood of alerts (the table still counts every one).
    let (mut minute, mut announced) = (Instant::now(), 0u32);
    while rx.recv_many(&mut batch, 256).await > 0 {
        match lis.record_sightings(&batch).await {
            Ok(new) => {
                if minute.elapsed() >= Duration::from_secs(60) {
                    (minute, announced) = (Instant::now(), 0);
                }
                for (kind, element, s) in new {
                    announced += 1;
                    if announced > MAX_ANNOUNCED_PER_MINUTE {
                        if announced == MAX_ANNOUNCED_PER_MINUTE + 1 {
                            tracing::warn!("more networks new to the unlocated report this minute: listed by sosdesk lis unlocated, not announced");
                        }
                        continue;
                    }
                    let kind = CallEventKind::UnlocatedNetwork {
                        element_kind: kind.as_str().to_string(),
                        element,
                        device: s.device_text(),
                        asked: s.asked.as_str().to_string(),
                        outcome: s.source.as_str().to_string(),
                    };
                    let id = format!("unlocated-{}", crate::sip::ids::new_call_ref());
                    let ev = CallEvent::of_no_call(id, crate::events::Caller::nobody(), String::new(), kind, s.at);
                    let _ = engine.send(NetInput::AnnounceUnlocated(Box::new(ev.clone())));
                    record_audit_only(&audit, &events, ev);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, n = batch.len(), "cannot record location outcomes for the unlocated report")
            }
        }
        batch.clear();
    }
}

/// Load the wiremap from the store and swap it in when its generation moved. A store that cannot
/// be read, or data the index refuses, leaves the previous map in place (logged): calls go on
/// with the last good wiremap rather than none.
pub(super) async fn reload_wiremap(
    lis: &LisStore,
    (wiremap, site_maps): (&SharedWiremap, &SharedSiteMaps),
    known: Option<i64>,
) -> Option<i64> {
    let generation = match lis.generation().await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the LIS generation; keeping the current wiremap");
            return known;
        }
    };
    if known == Some(generation) {
        return known;
    }
    let started = Instant::now();
    // The site maps first, on their own: a wiremap the index refuses does not keep a new map
    // from the desks (nor the other way round).
    match lis.load_site_maps().await {
        Ok(maps) => {
            if !maps.is_empty() || !site_maps.load().is_empty() {
                tracing::info!(maps = maps.len(), generation, "site maps loaded");
            }
            site_maps.replace(maps);
        }
        Err(e) => tracing::error!(error = %e, "cannot load the site maps; keeping the current ones"),
    }
    match lis.load_wiremap().await {
        Ok((erls, entries)) => match Wiremap::build(erls, &entries) {
            Ok(map) => {
                let n = map.len();
                wiremap.replace(map);
                tracing::info!(entries = n, generation, ms = started.elapsed().as_millis() as u64, "wiremap loaded");
                Some(generation)
            }
            Err(e) => {
                tracing::error!(error = %e, "the wiremap data is inconsistent; keeping the current wiremap");
                known
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot load the wiremap; keeping the current wiremap");
            known
        }
    }
}

/// The wiremap, and the user-entered locations, re-read whenever their generation moves.
pub(super) async fn refresh_wiremap(
    lis: LisStore,
    (wiremap, site_maps): (SharedWiremap, SharedSiteMaps),
    (mut generation, (users, mut user_generation)): (Option<i64>, (UserLocations, Option<i64>)),
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(every) => {
                generation = reload_wiremap(&lis, (&wiremap, &site_maps), generation).await;
                user_generation = users.refresh(user_generation).await;
            }
        }
    }
    lis.close().await;
}

/// The answer to one PUBLISH, sent even when the task keeping it panics or is dropped (as a 500):
/// the engine holds the PUBLISH until it comes.
pub(super) struct PublishAnswer {
    key: Option<String>,
    net_tx: mpsc::UnboundedSender<NetInput>,
}

impl PublishAnswer {
    pub(super) fn new(key: String, net_tx: mpsc::UnboundedSender<NetInput>) -> PublishAnswer {
        PublishAnswer { key: Some(key), net_tx }
    }

    pub(super) fn send(&mut self, answer: crate::routing::UserLocationAnswer) {
        if let Some(key) = self.key.take() {
            let _ = self.net_tx.send(NetInput::UserLocationKept { key, answer });
        }
    }
}

impl Drop for PublishAnswer {
    fn drop(&mut self) {
        self.send(Err((500, "the location could not be kept: PUBLISH again".into())));
    }
}

/// A PUBLISHed location (`routing::engine::publish`) validated and kept, or cleared, and then
/// audited (`user-location-changed`); the status and reasons of a refusal for the phone.
pub(super) async fn keep_published_location(
    users: &UserLocations,
    audit: &AuditWriter,
    request: crate::routing::UserLocationRequest,
) -> crate::routing::UserLocationAnswer {
    use crate::location::user_entered::{Change, EntryError, Publication};
    use crate::routing::UserLocationChange;
    let owner = request.owner.as_str();
    let (by, source) = (request.entered_by.as_str(), request.source.clone());
    let record = |change: Change, entry: Option<&crate::location::user_entered::UserLocation>, at| {
        audit.record(CallEvent::user_location_changed(change, owner, entry, by, "publish", source.clone(), at))
    };
    // RFC 3903 §6 step 4: a SIP-If-Match that names no publication kept (another tag, or the
    // entry cleared over the API or CLI): 412, and the phone publishes its body again.
    let not_kept = || Err((412, "no publication has this entity-tag: PUBLISH the PIDF-LO again".to_string()));
    let if_match = request.if_match.as_deref();
    let result = match (request.change, if_match) {
        (UserLocationChange::Clear, Some(tag)) => match users.clear_publication(owner, tag).await {
            Ok(true) => {
                tracing::info!(owner, by, "user-entered location cleared");
                record(Change::Cleared, None, chrono::Utc::now());
                Ok(())
            }
            Ok(false) => return not_kept(),
            Err(e) => Err(e),
        },
        // A refresh only extends the publication: the phone sends it by itself from wherever it
        // is, so it neither records a network nor makes a stale entry current.
        (UserLocationChange::Refresh, Some(tag)) => match users.refresh_publication(owner, tag, &request.etag).await {
            Ok(true) => Ok(()),
            Ok(false) => return not_kept(),
            Err(e) => Err(e),
        },
        (UserLocationChange::Clear | UserLocationChange::Refresh, None) => {
            // The engine sends neither without a SIP-If-Match (§4.5: 400 before it comes here).
            return Err((400, "a refresh or removal needs the publication's SIP-If-Match".into()));
        }
        (UserLocationChange::Enter { erl, network }, _) => {
            let publication = Publication { if_match: request.if_match.clone(), etag: request.etag.clone() };
            match users.publish(owner, *erl, network, by, chrono::Utc::now(), &publication).await {
                Ok(Some((entry, change))) => {
                    tracing::info!(owner, by = %entry.entered_by, network = %entry.network.describe(), "user-entered location kept");
                    record(change, Some(&entry), entry.confirmed_at);
                    Ok(())
                }
                Ok(None) => return not_kept(),
                Err(e) => Err(e),
            }
        }
    };
    result.map_err(|e| match e {
        // RFC 3261 §21.4.26 488: what the body says is not acceptable here; the Warning says why.
        EntryError::Invalid(reasons) => (488, format!("the address is not valid: {}", reasons.join("; "))),
        EntryError::Malformed(why) => (400, why),
        EntryError::Store(e) => {
            tracing::error!(error = %e, "cannot keep a PUBLISHed location");
            (500, "the location store cannot be written".into())
        }
    })
}

/// The validator of user-entered addresses: the MSAG of `lis.msag`. One that cannot be read is
/// logged and the required elements alone are checked — calls never depend on it.
pub(super) fn msag_validator(cfg: &Config) -> Option<Arc<dyn crate::location::validate::Validator>> {
    let path = cfg.msag_path()?;
    match crate::location::validate::MsagValidator::load(&path) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the MSAG: user-entered addresses are checked for their required elements only");
            None
        }
    }
}
