//! A broker's address together with the name it was given by, which TLS
//! checks the broker's certificate against.

use super::error::ClientError;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as given or advertised: a DNS name or an IP address.
    pub host: Arc<str>,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// The IPv4 address of a broker's advertised host and port.
    pub fn resolve(host: &str, port: i32) -> Result<Endpoint, ClientError> {
        let resolve_err = || ClientError::Resolve {
            host: host.to_string(),
            port,
        };
        let port16 = u16::try_from(port).map_err(|_| resolve_err())?;
        let addr = (host, port16)
            .to_socket_addrs()
            .map_err(|_| resolve_err())?
            .find(|a| a.is_ipv4())
            .ok_or_else(resolve_err)?;
        Ok(Endpoint {
            host: host.into(),
            addr,
        })
    }

    /// `HOST:PORT` (`[V6]:PORT` for an IPv6 literal), as `--bootstrap`
    /// takes it; the first address the name resolves to.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}`: `{port}` is not a port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("`{s}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{s}`: no address"))?;
        Ok(Endpoint {
            host: host.into(),
            addr,
        })
    }
}

impl From<SocketAddr> for Endpoint {
    /// An address known only by its IP: certificates are checked against
    /// the IP.
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string().into(),
            addr,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.addr.ip().to_string() == *self.host {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}:{} ({})", self.host, self.addr.port(), self.addr.ip())
        }
    }
}
