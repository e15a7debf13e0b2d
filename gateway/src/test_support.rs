//! One way to run the gateway in a test (this crate's and the worker's): in
//! process, on a free port of 127.0.0.1, with the test's configuration and
//! database.

use std::net::SocketAddr;

use common::config::Config;
use common::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;

pub struct RunningGateway {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub state: AppState,
    /// Cancelling it is the gateway's SIGTERM.
    pub stop: CancellationToken,
    /// Aborted on drop, unless detached.
    server: Option<JoinHandle<()>>,
}

impl RunningGateway {
    /// Serves `config` with `store`, connecting to the configured Redis (so
    /// a test can route it through a proxy). It runs until [`Self::shut_down`]
    /// or the drop of this value.
    pub async fn start(config: Config, store: Store) -> RunningGateway {
        let redis = common::redis_conn::open(&config.redis, &config.redis_tls)
            .await
            .expect("test Redis");
        let state = AppState::new(config, store, redis)
            .await
            .expect("gateway state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("a bound port");
        let stop = CancellationToken::new();
        let server = tokio::spawn(crate::serve(
            listener,
            state.clone(),
            stop.clone().cancelled_owned(),
        ));
        RunningGateway {
            addr,
            base: format!("http://{addr}"),
            state,
            stop,
            server: Some(server),
        }
    }

    /// Leaves the gateway running for the rest of the test; its base URL.
    pub fn detach(mut self) -> String {
        self.server.take();
        std::mem::take(&mut self.base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn shut_down(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.as_mut() {
            server.await.expect("the server task");
        }
        self.server = None;
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}
