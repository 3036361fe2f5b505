//! `make bench` helper: writes N sessions straight into the Redis store named by a portcullis
//! config file, the way a login would (sealed record plus index entries), and prints one
//! `Cookie` value per line. Tokens are random stand-ins; nothing here talks to an OP.
//!
//! Usage: `seed_sessions CONFIG COUNT > cookies.txt`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use portcullis::clock::unix_now;
use portcullis::config::{Config, StoreConfig};
use portcullis::metrics::Metrics;
use portcullis::random::random_token;
use portcullis::secret::Secret;
use portcullis::session::redis::RedisStore;
use portcullis::session::{SessionData, Sessions};

/// Sessions written at once; enough to keep a loopback Redis busy without a huge backlog.
const CONCURRENCY: usize = 256;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: seed_sessions CONFIG COUNT");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<usize>() else {
        eprintln!("COUNT must be a number, got {count:?}");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(&PathBuf::from(&path)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(seed(cfg, count)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn seed(cfg: Config, count: usize) -> Result<(), String> {
    let StoreConfig::Redis(redis) = &cfg.session.store else {
        return Err("seeding needs `session.store: redis`".into());
    };
    let store = RedisStore::new(redis, None).map_err(|e| e.to_string())?;
    store.connect(Duration::from_secs(10)).await;
    let metrics = Metrics::new(cfg.session.store.label()).map_err(|e| e.to_string())?;
    let sessions = Arc::new(Sessions::new(
        Arc::new(store),
        None,
        cfg.session.clone(),
        Arc::new(metrics),
    ));
    let cookie_name = cfg.session.cookie_name.clone();
    let mut written = 0;
    while written < count {
        let batch = CONCURRENCY.min(count - written);
        let tasks: Vec<_> = (0..batch)
            .map(|i| {
                let sessions = sessions.clone();
                let n = written + i;
                tokio::spawn(async move { sessions.create(&session_for(n)).await })
            })
            .collect();
        for task in tasks {
            let secret = task
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            println!("{cookie_name}={}", secret.encode());
        }
        written += batch;
    }
    Ok(())
}

fn session_for(n: usize) -> SessionData {
    let now = unix_now();
    SessionData {
        iss: "https://op.invalid".into(),
        sub: format!("bench-user-{n}"),
        sid: None,
        claims: serde_json::Map::new(),
        // The length of an opaque token from the test OP.
        access_token: Secret::new(random_token::<32>()),
        access_expires_at: now + 3600,
        access_lifetime: 3600,
        refresh_token: None,
        id_token: Secret::new(random_token::<32>()),
        created_at: now,
        absolute_deadline: now + 86_400,
        logout_id: random_token::<16>(),
        dpop_key: None,
    }
}
