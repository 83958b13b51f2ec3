//! TEMPORARY in-memory stand-in until the diesel store lands (same API).
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::domain::{Intent, SessionKey, SessionState, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}
impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(raw.into()))
        } else if raw.contains("://") || raw.is_empty() {
            Err("unsupported".into())
        } else {
            Ok(DatabaseUrl::Sqlite(raw.into()))
        }
    }
}
impl std::str::FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}
impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("x")]
    X,
}
#[derive(Clone, Default)]
pub struct Store {
    rows: Arc<Mutex<HashMap<SessionKey, SessionRow>>>,
    ev: Arc<Mutex<Vec<EventRow>>>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub key: SessionKey,
    pub state: SessionState,
    pub intent: Intent,
    pub is_connected: bool,
    pub connected_number: Option<String>,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub key: SessionKey,
    pub at_ms: i64,
    pub kind: String,
    pub detail: Option<String>,
    pub actor: String,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub key: SessionKey,
    pub at_ms: i64,
    pub kind: String,
    pub detail: Option<String>,
    pub actor: String,
}
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
impl Store {
    pub fn open(_url: &DatabaseUrl, _max_slots: u16) -> Result<Store, StoreError> {
        Ok(Store::default())
    }
    pub fn backend(&self) -> &'static str {
        "memory"
    }
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    pub async fn save_session(&self, row: SessionRow) -> Result<(), StoreError> {
        self.rows.lock().unwrap().insert(row.key.clone(), row);
        Ok(())
    }
    pub async fn load_session(&self, key: &SessionKey) -> Result<Option<SessionRow>, StoreError> {
        Ok(self.rows.lock().unwrap().get(key).cloned())
    }
    pub async fn list_sessions(
        &self,
        _user: Option<&UserId>,
    ) -> Result<Vec<SessionRow>, StoreError> {
        Ok(self.rows.lock().unwrap().values().cloned().collect())
    }
    pub async fn record_event(&self, ev: NewEvent) -> Result<(), StoreError> {
        let mut v = self.ev.lock().unwrap();
        let id = v.len() as i64;
        v.push(EventRow {
            id,
            key: ev.key,
            at_ms: ev.at_ms,
            kind: ev.kind,
            detail: ev.detail,
            actor: ev.actor,
        });
        Ok(())
    }
    pub async fn events(&self, key: &SessionKey) -> Result<Vec<EventRow>, StoreError> {
        Ok(self
            .ev
            .lock()
            .unwrap()
            .iter()
            .filter(|e| &e.key == key)
            .cloned()
            .collect())
    }
}
