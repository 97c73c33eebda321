//! Desk registrations across nodes: a desk registered through node A gets the alerts (SIP
//! MESSAGE) of calls through node B.
//!
//! After every REGISTER a node writes the account's UDP contacts (`registrations`, one row per
//! contact, replaced per account) and notifies [`CHANNEL`]; every node keeps the whole list of
//! the others' live contacts in its engine (`Engine::on_shared_registrations`), re-read at each
//! notification, so an alert never waits for the database. TCP and TLS contacts are not
//! shared: they are reached only over the desk's connection to the node it registered with
//! (RFC 5626 flows end there); such a desk gets the other nodes' alerts through the API event
//! stream instead (`crate::shared::events`).

use std::net::SocketAddr;

use sqlx::Row;
use tokio::sync::{mpsc, watch};

use super::Wakeups;
use crate::core_handle::NetInput;
use crate::db::{Backend, Db};
use crate::routing::SharedRegistration;

/// The PostgreSQL notification channel of registration changes.
pub const CHANNEL: &str = "sosdesk_registrations";

/// Registrations waiting to be written; beyond, new ones are dropped (logged): the desk is
/// still reached from this node, and it refreshes its registration.
const WRITE_QUEUE: usize = 1024;

#[derive(Clone)]
pub struct RegistrationStore {
    db: Db,
    node: String,
}

impl RegistrationStore {
    pub fn new(db: Db, node: Option<&str>) -> RegistrationStore {
        RegistrationStore { db, node: node.unwrap_or("").to_string() }
    }

    /// Replaces this node's contacts of `r.user` with `r.contacts`, and tells the other nodes.
    pub async fn put(&self, r: &SharedRegistration) -> Result<(), sqlx::Error> {
        let b = self.db.backend;
        let mut tx = self.db.pool.begin().await?;
        sqlx::query(&b.sql("DELETE FROM registrations WHERE node = ? AND (username = ? OR expires_ms <= ?)"))
            .bind(&self.node)
            .bind(&r.user)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await?;
        for (uri, addr, until) in &r.contacts {
            sqlx::query(&b.sql(
                "INSERT INTO registrations (node, username, uri, addr, expires_ms) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (node, username, uri) DO UPDATE SET addr = excluded.addr, expires_ms = excluded.expires_ms",
            ))
            .bind(&self.node)
            .bind(&r.user)
            .bind(uri)
            .bind(addr.to_string())
            .bind(until.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        }
        if b == Backend::Postgres {
            // Delivered at the commit.
            sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Every live contact the other nodes hold, by account.
    pub async fn others(&self) -> Result<Vec<SharedRegistration>, sqlx::Error> {
        let rows = sqlx::query(&self.db.backend.sql(
            "SELECT username, uri, addr, expires_ms FROM registrations \
             WHERE node <> ? AND expires_ms > ? ORDER BY username, uri",
        ))
        .bind(&self.node)
        .bind(chrono::Utc::now().timestamp_millis())
        .fetch_all(&self.db.pool)
        .await?;
        let mut out: Vec<SharedRegistration> = Vec::new();
        for r in rows {
            let user: String = r.try_get("username")?;
            let addr: SocketAddr = match r.try_get::<String, _>("addr")?.parse() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%user, error = %e, "a shared registration with a bad address is left out");
                    continue;
                }
            };
            let Some(until) = chrono::DateTime::from_timestamp_millis(r.try_get("expires_ms")?) else { continue };
            let contact = (r.try_get("uri")?, addr, until);
            match out.last_mut() {
                Some(last) if last.user == user => last.contacts.push(contact),
                _ => out.push(SharedRegistration { user, contacts: vec![contact] }),
            }
        }
        Ok(out)
    }

    /// The writer: a task that writes this node's registrations, in order (ends once the
    /// sender is dropped and what it holds is written).
    pub fn spawn_writer(&self) -> mpsc::Sender<SharedRegistration> {
        let (tx, mut rx) = mpsc::channel::<SharedRegistration>(WRITE_QUEUE);
        let store = self.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if let Err(e) = store.put(&r).await {
                    tracing::error!(user = %r.user, error = %e, "cannot share a desk's registration: other nodes' alerts will not reach it");
                }
            }
        });
        tx
    }

    /// Hands the engine the others' registrations at the start and at every change, until
    /// `stop`. Returns at once for SQLite (one node).
    pub(crate) async fn follow(self, engine: mpsc::UnboundedSender<NetInput>, stop: watch::Receiver<bool>) {
        let mut wakeups = Wakeups::new(self.db.clone(), CHANNEL, stop);
        while wakeups.next().await {
            match self.others().await {
                Ok(list) => {
                    if engine.send(NetInput::SharedRegistrations(list)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read the other nodes' registrations"),
            }
        }
    }
}
