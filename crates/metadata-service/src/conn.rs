//! Connection hygiene below hyper: what a client may hold and for how long.
//!
//! hyper's http1 server bounds the time to read request headers (which also bounds a
//! keep-alive connection waiting for its next request), but not a client that sends
//! requests and never reads the answers: the response write then waits forever, and a
//! few such connections keep every slot (measured before: `/healthz` unanswered for
//! 32 s with `--max-connections 4`). [`Guarded`] wraps a connection's stream and adds
//! what hyper lacks:
//!
//! * a **write timeout**: a write (or flush) that makes no progress for `write_timeout`
//!   fails the connection;
//! * an **idle timeout**: with no request in flight and nothing left to write, a
//!   connection that sends nothing for `idle_timeout` is closed;
//! * a **deadline for the whole exchange**: from the moment a request reaches the
//!   router until the last byte of its answer is written, `request_timeout` (the router
//!   answers `408` if the handler itself is late; a write after the deadline fails);
//! * a **cap on requests per connection**: the `max_requests`-th answer carries
//!   `Connection: close`.
//!
//! [`ClientSlots`] caps the connections one client address holds at once (an IPv6
//! client by its /64, the smallest block one host is usually given).
//!
//! Written here because no maintained crate does this for a hyper 1 server: tower's
//! timeouts end when the handler returns, before the body is written, and
//! `tokio-io-timeout` times reads and writes separately with no notion of a request
//! in flight, so it would cut a long healthy download or an idle keep-alive alike.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits [`Guarded`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_requests: u64,
}

/// What the request side tells the stream side of one connection.
#[derive(Debug)]
pub struct Exchange {
    start: Instant,
    /// Deadline of the current exchange, in ns after `start` (0 = none yet).
    deadline_ns: AtomicU64,
    in_flight: AtomicBool,
    /// An answer is waiting for the client to read (a write stalled).
    writing: AtomicBool,
    requests: AtomicU64,
    /// When the connection last became idle (opened, or a handler finished), in ns
    /// after `start`.
    idle_since_ns: AtomicU64,
    /// Told to close when its slot is needed (see [`ClientSlots`]).
    evict: tokio::sync::Notify,
}

/// A connection must have been idle this long before a full service evicts it for
/// another address's connection: a new connection gets time to send its first
/// request. (Within one address the oldest idle connection goes at once: there the
/// newcomer is the one that has just spoken, and the cap is the protection.)
const MIN_IDLE_FOR_EVICTION: Duration = Duration::from_secs(1);

impl Exchange {
    pub fn new() -> Arc<Exchange> {
        Arc::new(Exchange {
            start: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            in_flight: AtomicBool::new(false),
            writing: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            idle_since_ns: AtomicU64::new(0),
            evict: tokio::sync::Notify::new(),
        })
    }

    /// A request reached the router: its exchange must end within `timeout`. Returns
    /// the request's number on this connection (1-based) and a guard that marks the
    /// handler done when dropped.
    pub fn begin(self: &Arc<Self>, timeout: Duration) -> (u64, InFlight) {
        let deadline = (Instant::now() + timeout).duration_since(self.start);
        self.deadline_ns.store(
            u64::try_from(deadline.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            Ordering::Relaxed,
        );
        self.in_flight.store(true, Ordering::Relaxed);
        let number = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        (number, InFlight(self.clone()))
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.start + Duration::from_nanos(ns)),
        }
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Idle: no request being handled and no answer waiting to be written.
    fn idle(&self) -> bool {
        !self.in_flight() && !self.writing.load(Ordering::Relaxed)
    }

    /// Idle for at least [`MIN_IDLE_FOR_EVICTION`]: what a full service may take from
    /// another client.
    fn evictable(&self) -> bool {
        self.idle()
            && self
                .now_ns()
                .saturating_sub(self.idle_since_ns.load(Ordering::Relaxed))
                >= MIN_IDLE_FOR_EVICTION.as_nanos() as u64
    }

    /// Resolves when the connection was chosen to make room for another connection of
    /// its client; the connection should then close.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// Marks the connection's handler as running until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Exchange>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ns
            .store(self.0.now_ns(), Ordering::Relaxed);
        self.0.in_flight.store(false, Ordering::Relaxed);
    }
}

/// A timer that is reused (no allocation per arming).
struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: false,
        }
    }

    /// Arms the timer at `deadline` unless it already runs, then polls it: `true` once
    /// it has fired.
    fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: impl FnOnce() -> Instant) -> bool {
        if !self.armed {
            self.sleep.as_mut().reset(deadline());
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

/// A connection's stream with the write, idle and exchange deadlines (module docs).
pub struct Guarded<IO> {
    io: IO,
    exchange: Arc<Exchange>,
    limits: ConnLimits,
    write_timer: Timer,
    idle_timer: Timer,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, exchange: Arc<Exchange>, limits: ConnLimits) -> Self {
        Guarded {
            io,
            exchange,
            limits,
            write_timer: Timer::new(),
            idle_timer: Timer::new(),
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
    }

    /// Progress, or a stall of the write side bounded by the write timeout and the
    /// exchange deadline. `wrote` says whether bytes left (an answer still being
    /// written is not idleness; a flush with nothing to write is no activity).
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        let deadline = self.exchange.deadline();
        match polled {
            Poll::Ready(result) => {
                if self.write_timer.armed {
                    self.write_timer.disarm();
                    self.exchange.writing.store(false, Ordering::Relaxed);
                }
                if result.as_ref().is_ok_and(wrote) {
                    self.idle_timer.disarm();
                }
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return Poll::Ready(Err(Self::timed_out("request deadline passed")));
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.write_timer.armed {
                    self.exchange.writing.store(true, Ordering::Relaxed);
                }
                let stall = self.limits.write_timeout;
                if self.write_timer.poll_expired(cx, || {
                    let stalled = Instant::now() + stall;
                    deadline.map_or(stalled, |deadline| deadline.min(stalled))
                }) {
                    return Poll::Ready(Err(Self::timed_out("response write timed out")));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.idle_timer.disarm();
                Poll::Ready(result)
            }
            Poll::Pending => {
                // Idle = no handler running and no answer waiting to be written.
                if this.exchange.in_flight() || this.write_timer.armed {
                    this.idle_timer.disarm();
                } else {
                    let idle = this.limits.idle_timeout;
                    if this.idle_timer.poll_expired(cx, || Instant::now() + idle) {
                        return Poll::Ready(Err(Self::timed_out("idle connection")));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.on_write(cx, polled, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.on_write(cx, polled, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.on_write(cx, polled, |_| false)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        match self.on_write(cx, polled, |_| false) {
            // Closing after the deadline is still closing.
            Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::TimedOut => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The connections each client address holds, capped.
#[derive(Debug)]
pub struct ClientSlots {
    cap: usize,
    held: Mutex<HashMap<IpAddr, Vec<Held>>>,
    next_id: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug)]
struct Held {
    id: u64,
    exchange: Arc<Exchange>,
}

/// One connection's place in [`ClientSlots`], given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: IpAddr,
    id: u64,
}

/// The address a cap applies to: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

impl ClientSlots {
    /// `cap` connections per client address; 0 = no cap.
    pub fn new(cap: usize) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            cap,
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    /// A slot for a new connection from `ip`. When that client already holds `cap`,
    /// its oldest idle connection (no request being handled or answered) is told to
    /// close and gives up its slot: an idle or half-sent-headers flood costs its
    /// sender its own connections, not a real request from the same address (a NAT,
    /// a load balancer). `None` when all are busy. A sustained flood from the same
    /// address can still evict a new connection before it speaks once `cap` newer
    /// ones have arrived: the cap (64 by default) is its time to speak.
    pub fn take(self: &Arc<Self>, ip: IpAddr, exchange: &Arc<Exchange>) -> Option<ClientSlot> {
        let client = client_key(ip);
        let mut held = self.held.lock().expect("client slots");
        let list = held.entry(client).or_default();
        if self.cap != 0 && list.len() >= self.cap {
            let idle = list.iter().position(|held| held.exchange.idle())?;
            let evicted = list.remove(idle);
            evicted.exchange.evict.notify_one();
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Held {
            id,
            exchange: exchange.clone(),
        });
        Some(ClientSlot {
            slots: self.clone(),
            client,
            id,
        })
    }
}

impl ClientSlots {
    /// Every slot of the service is taken: tells the oldest evictable connection of
    /// the client address holding the most connections to close (so a few addresses
    /// keeping connections open cannot keep others out). `false` if none is idle.
    pub fn evict_from_heaviest(&self) -> bool {
        let mut held = self.held.lock().expect("client slots");
        let heaviest = held
            .iter()
            .filter(|(_, list)| list.iter().any(|held| held.exchange.evictable()))
            .max_by_key(|(_, list)| list.len())
            .map(|(client, _)| *client);
        let Some(client) = heaviest else {
            return false;
        };
        let list = held.get_mut(&client).expect("just found");
        let Some(idle) = list.iter().position(|held| held.exchange.evictable()) else {
            return false;
        };
        let evicted = list.remove(idle);
        if list.is_empty() {
            held.remove(&client);
        }
        evicted.exchange.evict.notify_one();
        self.evictions.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Connections told to close so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().expect("client slots");
        if let Some(list) = held.get_mut(&self.client) {
            list.retain(|held| held.id != self.id);
            if list.is_empty() {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_slots_cap_per_address_and_ipv6_prefix() {
        let slots = ClientSlots::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let busy = || {
            let exchange = Exchange::new();
            exchange.in_flight.store(true, Ordering::Relaxed);
            exchange
        };
        let (one, two) = (busy(), busy());
        let first = slots.take(a, &one).unwrap();
        let _second = slots.take(a, &two).unwrap();
        assert!(slots.take(a, &busy()).is_none(), "both busy: refused");
        assert!(slots.take("192.0.2.2".parse().unwrap(), &busy()).is_some());
        drop(first);
        let third = busy();
        let _third = slots.take(a, &third).unwrap();
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let _x = slots.take(v6("2001:db8::1"), &busy()).unwrap();
        let _y = slots.take(v6("2001:db8::ffff:2"), &busy()).unwrap();
        assert!(slots.take(v6("2001:db8::3"), &busy()).is_none(), "same /64");
        assert!(slots.take(v6("2001:db8:0:1::1"), &busy()).is_some());
        assert_eq!(client_key(v6("::ffff:192.0.2.1")), a);
        let open = ClientSlots::new(0);
        let held: Vec<_> = (0..100).map(|_| open.take(a, &busy()).unwrap()).collect();
        assert_eq!(held.len(), 100);
    }

    /// An exchange that has been idle for longer than the eviction minimum.
    fn long_idle() -> Arc<Exchange> {
        let mut exchange = Exchange::new();
        Arc::get_mut(&mut exchange).unwrap().start = Instant::now()
            .checked_sub(MIN_IDLE_FOR_EVICTION * 2)
            .unwrap();
        exchange
    }

    #[tokio::test]
    async fn an_idle_connection_makes_room_for_its_client() {
        let slots = ClientSlots::new(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let idle = Exchange::new();
        let _idle_slot = slots.take(a, &idle).unwrap();
        let fresh = Exchange::new();
        let _fresh_slot = slots.take(a, &fresh).expect("the idle one is evicted");
        // The evicted connection is told (the permit is kept until it listens).
        tokio::time::timeout(Duration::from_secs(5), idle.evicted())
            .await
            .expect("eviction notice");
        assert_eq!(slots.held.lock().unwrap()[&a].len(), 1);
    }

    #[tokio::test]
    async fn a_full_service_evicts_from_the_heaviest_client() {
        let slots = ClientSlots::new(0);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a_idle: Vec<_> = (0..3).map(|_| long_idle()).collect();
        let _a: Vec<_> = a_idle.iter().map(|e| slots.take(a, e).unwrap()).collect();
        let b_idle = long_idle();
        let _b = slots.take(b, &b_idle).unwrap();
        assert!(slots.evict_from_heaviest());
        tokio::time::timeout(Duration::from_secs(5), a_idle[0].evicted())
            .await
            .expect("the oldest idle connection of the heaviest client");
        assert_eq!(slots.held.lock().unwrap()[&a].len(), 2);
        let busy = ClientSlots::new(0);
        let fresh = Exchange::new();
        let _f = busy.take(a, &fresh).unwrap();
        assert!(!busy.evict_from_heaviest(), "nothing idle long enough");
    }
}
