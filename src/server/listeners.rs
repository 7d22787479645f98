//! The service's listening sockets, bound from the settings before [`super::run`]
//! serves on them: whoever starts the server learns the addresses it listens on,
//! including the port the system picked for a configured port 0.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Settings;

use super::Error;

/// The gRPC port, and the HTTP gateway's and metrics' ports when configured.
///
/// Made only by [`Listeners::bind`], so the sockets always match the settings they
/// were bound from.
pub struct Listeners {
    pub(super) grpc: Bound,
    pub(super) http: Option<Bound>,
    pub(super) metrics: Option<Bound>,
}

/// A listening socket and the address it listens on (for a configured port 0, the
/// port the system picked), read once when it was bound.
pub(super) struct Bound {
    pub(super) listener: TcpListener,
    pub(super) addr: SocketAddr,
}

impl Listeners {
    /// Binds `listen`, `[http].listen` and `[metrics].listen`.
    ///
    /// # Errors
    /// The first address that cannot be bound, named by its setting.
    pub async fn bind(settings: &Settings) -> Result<Listeners, Error> {
        let grpc = bind_one("listen", settings.listen).await?;
        let http = match &settings.http {
            Some(http) => Some(bind_one("http.listen", http.listen).await?),
            None => None,
        };
        let metrics = match settings.metrics.listen {
            Some(addr) => Some(bind_one("metrics.listen", addr).await?),
            None => None,
        };
        Ok(Listeners {
            grpc,
            http,
            metrics,
        })
    }

    /// Where gRPC calls are accepted.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.addr
    }

    /// Where the HTTP gateway is served, when it is on.
    #[must_use]
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|b| b.addr)
    }

    /// Where `GET /metrics` is served, when it is on.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|b| b.addr)
    }
}

/// Binds `addr`, the value of `setting`.
async fn bind_one(setting: &'static str, addr: SocketAddr) -> Result<Bound, Error> {
    let listen = |source| Error::Listen {
        setting,
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    Ok(Bound { listener, addr })
}

#[cfg(test)]
mod tests {
    use super::super::test_settings as settings;
    use super::*;

    #[tokio::test]
    async fn port_zero_binds_a_port_of_the_systems_choosing_and_says_which() {
        let listeners = Listeners::bind(&settings(
            "listen = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
        ))
        .await
        .expect("bound");
        let ports = [
            listeners.grpc_addr().port(),
            listeners.http_addr().unwrap().port(),
            listeners.metrics_addr().unwrap().port(),
        ];
        assert!(ports.iter().all(|&p| p != 0), "{ports:?}");
        assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
        // Each address is the one being listened on.
        for port in ports {
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("accepts");
        }
    }

    #[tokio::test]
    async fn doors_that_are_not_configured_are_not_opened() {
        let listeners = Listeners::bind(&settings("listen = \"127.0.0.1:0\"\n"))
            .await
            .expect("bound");
        assert_ne!(listeners.grpc_addr().port(), 0);
        assert_eq!(listeners.http_addr(), None);
        assert_eq!(listeners.metrics_addr(), None);
    }

    #[tokio::test]
    async fn a_taken_address_is_refused_naming_its_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        for (text, setting) in [
            (format!("listen = \"{addr}\"\n"), "listen"),
            (
                format!("listen = \"127.0.0.1:0\"\n[http]\nlisten = \"{addr}\"\n"),
                "http.listen",
            ),
            (
                format!("listen = \"127.0.0.1:0\"\n[metrics]\nlisten = \"{addr}\"\n"),
                "metrics.listen",
            ),
        ] {
            let Err(err) = Listeners::bind(&settings(&text)).await else {
                panic!("{setting}: bound a taken address");
            };
            assert!(
                matches!(err, Error::Listen { setting: s, addr: a, .. } if s == setting && a == addr),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("{setting}: cannot listen on {addr}: ")),
                "{err}"
            );
        }
    }
}
