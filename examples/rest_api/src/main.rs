//! `ferry-example-rest-api [ADDR] [DATABASE]`: see README.md.

use anyhow::Context;
use ferry_client::hub::HubApi;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let database = args.next().unwrap_or_else(|| "todos.sqlite3".into());
    let env = |name: &str| std::env::var(name).with_context(|| format!("set {name}"));
    let hub_url = std::env::var("FERRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let channel = std::env::var("FERRY_CHANNEL").unwrap_or_else(|_| "todos".into());
    let hub = HubApi::new(&hub_url, &env("FERRY_API_KEY")?)?;
    let app =
        ferry_example_rest_api::App::open(database.as_ref(), hub, &channel, &env("TODO_TOKEN")?)?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    println!("to-do API on http://{addr}, publishing to {channel} on {hub_url}");
    axum::serve(listener, app.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
