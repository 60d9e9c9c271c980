//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`): READY, WATCHDOG pets,
//! STATUS lines and STOPPING, sent as datagrams to `$NOTIFY_SOCKET`. Outside systemd (no
//! socket in the environment) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where notifications go, and when the watchdog wants its next pet.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
    last_pet: Option<Instant>,
}

#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (as systemd sets them for the service).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        let target = socket.and_then(|s| {
            let bytes = s.as_encoded_bytes();
            let target = match bytes.first() {
                #[cfg(target_os = "linux")]
                Some(b'@') => Target::Abstract(bytes[1..].to_vec()),
                Some(_) => Target::Path(PathBuf::from(&s)),
                None => return None,
            };
            match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, target)),
                Err(e) => {
                    log::warn!("systemd notifications disabled: cannot create a socket: {e}");
                    None
                }
            }
        });
        Self {
            target,
            watchdog,
            last_pet: None,
        }
    }

    /// Whether systemd is listening.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (e.g. `READY=1`); failures are logged, never fatal.
    pub fn send(&self, msg: &str) {
        let Some((sock, target)) = &self.target else {
            return;
        };
        let res = match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
            }
        };
        if let Err(e) = res {
            log::warn!("systemd notification '{msg}' failed: {e}");
        }
    }

    /// Pets the watchdog if half its interval has passed since the last pet.
    pub fn pet(&mut self, now: Instant) {
        let Some(interval) = self.watchdog else {
            return;
        };
        if self
            .last_pet
            .is_none_or(|last| now.duration_since(last) >= interval / 2)
        {
            self.send("WATCHDOG=1");
            self.last_pet = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), Target::Path(path))),
            watchdog: Some(Duration::from_secs(10)),
            last_pet: None,
        };
        n.send("READY=1");
        let now = Instant::now();
        n.pet(now);
        // Too soon for another pet.
        n.pet(now + Duration::from_secs(1));
        n.pet(now + Duration::from_secs(6));
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..3 {
            let k = listener.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..k]).into_owned());
        }
        assert_eq!(got, ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]);
        listener.set_nonblocking(true).unwrap();
        assert!(listener.recv(&mut buf).is_err());
    }

    #[test]
    fn without_systemd_nothing_is_sent() {
        let n = Notifier {
            target: None,
            watchdog: None,
            last_pet: None,
        };
        assert!(!n.active());
        n.send("READY=1");
    }
}
