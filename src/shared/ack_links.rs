//! Acknowledgement links used (`ack_links_used`), so that a link acknowledges once whichever
//! node it is posted to (docs/channels.md). The claim is one INSERT: the primary key lets one
//! node's through and the other's conflict (`ON CONFLICT DO NOTHING`, 0 rows), with no lock
//! held between nodes. A node claims before it acknowledges and gives the claim back when the
//! acknowledgement fails, so that the link can be used again.

use sha2::{Digest, Sha256};

use crate::db::Db;

/// The row's key: the token is a credential, so only its hash is stored.
fn key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Claims the link `token` (for `call_id`, valid until `expires`, Unix s) for `node`: true if
/// no node had used it. Rows of links expired a day ago are dropped on the way.
pub async fn claim(db: &Db, node: Option<&str>, token: &str, call_id: &str, expires: i64) -> Result<bool, sqlx::Error> {
    let sql = db.backend.sql(
        "INSERT INTO ack_links_used (token_sha256, call_id, expires, node) VALUES (?, ?, ?, ?) \
         ON CONFLICT (token_sha256) DO NOTHING",
    );
    let inserted = sqlx::query(&sql)
        .bind(key(token))
        .bind(call_id)
        .bind(expires)
        .bind(node)
        .execute(&db.pool)
        .await?
        .rows_affected();
    // A day after it expired a link is refused by its signature anyway: its row is not needed.
    let sql = db.backend.sql("DELETE FROM ack_links_used WHERE expires < ?");
    sqlx::query(&sql).bind(chrono::Utc::now().timestamp() - 86_400).execute(&db.pool).await?;
    Ok(inserted == 1)
}

/// Gives the claim on `token` back (its acknowledgement failed: the link may be used again).
pub async fn unclaim(db: &Db, token: &str) -> Result<(), sqlx::Error> {
    let sql = db.backend.sql("DELETE FROM ack_links_used WHERE token_sha256 = ?");
    sqlx::query(&sql).bind(key(token)).execute(&db.pool).await.map(|_| ())
}
