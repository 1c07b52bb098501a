//! examples/rest_api: a to-do REST API on SQLite with bearer-token auth that publishes
//! every change to a ferry hub through its server API (`ferry_client::hub::HubApi`).
//! See README.md.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use ferry_client::hub::HubApi;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A to-do item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Todo {
    /// Its id.
    pub id: i64,
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
}

/// The app's state: the database, the hub and the token clients must present.
#[derive(Clone)]
pub struct App {
    db: Arc<Mutex<Connection>>,
    hub: Arc<HubApi>,
    channel: Arc<str>,
    token: Arc<str>,
}

impl App {
    /// Open (or create) the database at `path` and talk to the hub through `hub`.
    pub fn open(
        path: &std::path::Path,
        hub: HubApi,
        channel: &str,
        token: &str,
    ) -> anyhow::Result<App> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS todos (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 title TEXT NOT NULL,
                 done INTEGER NOT NULL DEFAULT 0
             );",
        )?;
        Ok(App {
            db: Arc::new(Mutex::new(db)),
            hub: Arc::new(hub),
            channel: channel.into(),
            token: token.into(),
        })
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/todos", get(list).post(create))
            .route("/todos/{id}", patch(update).delete(remove))
            .with_state(self)
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let offered = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if offered == Some(&*self.token) {
            Ok(())
        } else {
            Err(error(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer TODO_TOKEN",
            ))
        }
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ApiError> {
        let db = self
            .db
            .lock()
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "database lock poisoned"))?;
        f(&db).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &format!("database: {e}")))
    }

    /// Publish a change after its commit; `false` when the hub refused or was away (the
    /// change stays committed; the answer tells the caller).
    async fn publish(&self, change: Value) -> bool {
        match self.hub.publish(&self.channel, &change).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the change is saved but was not published");
                false
            }
        }
    }
}

/// A refusal: a status and a message, answered as `{"error": MESSAGE}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: &str) -> ApiError {
    ApiError(status, message.to_string())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Todo> {
    Ok(Todo {
        id: r.get(0)?,
        title: r.get(1)?,
        done: r.get::<_, i64>(2)? != 0,
    })
}

async fn list(State(app): State<App>, headers: HeaderMap) -> Result<Json<Vec<Todo>>, ApiError> {
    app.check(&headers)?;
    let todos = app.with_db(|db| {
        let mut stmt = db.prepare("SELECT id, title, done FROM todos ORDER BY id")?;
        let rows = stmt.query_map([], row)?;
        rows.collect()
    })?;
    Ok(Json(todos))
}

#[derive(Deserialize)]
struct NewTodo {
    title: String,
}

async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    Json(new): Json<NewTodo>,
) -> Result<Response, ApiError> {
    app.check(&headers)?;
    let title = new.title.trim().to_string();
    if title.is_empty() || title.len() > 1000 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "title must be 1 to 1000 bytes",
        ));
    }
    let todo = app.with_db(|db| {
        db.execute("INSERT INTO todos (title) VALUES (?1)", params![title])?;
        Ok(Todo {
            id: db.last_insert_rowid(),
            title: title.clone(),
            done: false,
        })
    })?;
    let published = app.publish(json!({"op": "created", "todo": todo})).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"todo": todo, "published": published})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct Change {
    title: Option<String>,
    done: Option<bool>,
}

async fn update(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(change): Json<Change>,
) -> Result<Response, ApiError> {
    app.check(&headers)?;
    let todo = app.with_db(|db| {
        if let Some(title) = &change.title {
            db.execute(
                "UPDATE todos SET title = ?1 WHERE id = ?2",
                params![title, id],
            )?;
        }
        if let Some(done) = change.done {
            db.execute(
                "UPDATE todos SET done = ?1 WHERE id = ?2",
                params![i64::from(done), id],
            )?;
        }
        db.query_row(
            "SELECT id, title, done FROM todos WHERE id = ?1",
            params![id],
            row,
        )
        .optional()
    })?;
    let Some(todo) = todo else {
        return Err(error(StatusCode::NOT_FOUND, "no such todo"));
    };
    let published = app.publish(json!({"op": "updated", "todo": todo})).await;
    Ok(Json(json!({"todo": todo, "published": published})).into_response())
}

async fn remove(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    app.check(&headers)?;
    let deleted = app.with_db(|db| db.execute("DELETE FROM todos WHERE id = ?1", params![id]))?;
    if deleted == 0 {
        return Err(error(StatusCode::NOT_FOUND, "no such todo"));
    }
    let published = app.publish(json!({"op": "deleted", "id": id})).await;
    Ok(Json(json!({"deleted": id, "published": published})).into_response())
}
