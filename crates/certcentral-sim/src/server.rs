//! The accept loop behind [`Sim::spawn`]: hyper HTTP/1 connections over the axum router, so a
//! response marked [`DropConnection`] can close the connection without an answer.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::Sim;
use crate::api::DropConnection;

/// A simulator serving HTTP. Dropping it stops the server (open connections are closed).
pub struct RunningSim {
    /// The bound address.
    pub addr: SocketAddr,
    /// `http://ADDR/services/v2`, the CertCentral base URL to give a client.
    pub base_url: String,
    /// `http://ADDR/_sim`, the admin API.
    pub admin_url: String,
    sim: Sim,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// The simulator behind the server (shared state).
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Stops accepting, closes open connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct Dropped;

pub(crate) async fn spawn(sim: Sim, listen: SocketAddr) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let router = sim.router();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // connections live in the set so that stopping the loop closes them all
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let tower = TowerToHyperService::new(router.clone());
                        let svc = service_fn(move |req: hyper::Request<Incoming>| {
                            let fut = tower.call(req);
                            async move {
                                let resp = match fut.await {
                                    Ok(resp) => resp,
                                    Err(never) => match never {},
                                };
                                if resp.extensions().get::<DropConnection>().is_some() {
                                    Err(Dropped)
                                } else {
                                    Ok(resp)
                                }
                            }
                        });
                        conns.spawn(async move {
                            if let Err(err) = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await
                            {
                                tracing::debug!(error = %err, "connection closed");
                            }
                        });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    });
    Ok(RunningSim {
        addr,
        base_url: format!("http://{addr}/services/v2"),
        admin_url: format!("http://{addr}/_sim"),
        sim,
        stop: Some(stop_tx),
        task: Some(task),
    })
}
