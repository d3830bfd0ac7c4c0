//! Shared helpers for the gateway's integration tests: simulators and a gateway on loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

pub mod scripted;

use ballast_core::config::Config;
use ballast_core::config::env::MapEnv;
use ballast_server::AppState;
use ballast_sim::{Faults, SimConfig, SimHandle};
use serde_json::Value;

pub struct Gateway {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn sim() -> SimHandle {
    ballast_sim::start(SocketAddr::from(([127, 0, 0, 1], 0)), SimConfig::default())
        .await
        .unwrap()
}

pub async fn gateway(toml: &str) -> Gateway {
    let config = Config::from_toml(toml, &MapEnv::new(&[])).unwrap();
    let state = Arc::new(AppState::new(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ballast_server::serve(listener, state, async {
        let _ = rx.await;
    }));
    Gateway {
        url,
        shutdown: Some(tx),
    }
}

pub fn faults(v: Value) -> Faults {
    serde_json::from_value(v).unwrap()
}
