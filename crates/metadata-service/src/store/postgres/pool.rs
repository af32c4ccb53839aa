//! A small pool of synchronous connections: the store's methods run on blocking
//! threads, each borrows one connection for its statements and gives it back.
//!
//! Each connection keeps the statements it prepared (by their text), so a statement
//! costs one round trip after its first use on that connection. A connection that
//! broke (the server went away, an I/O error) is dropped when it is given back; the
//! next borrower opens a new one.
//!
//! The synchronous client blocks on a small runtime of its own, which tokio refuses
//! inside a runtime's context (a panic: "Cannot start a runtime from within a
//! runtime"). The service calls its store from blocking threads, but also from async
//! code (loading the fleet at start-up, dropping the store at shutdown): there
//! `Pool::with` runs the call on a scoped thread of its own (`outside_runtime`).

use super::super::StoreError;
use super::tls::Tls;
use ::postgres::{Client, NoTls, Statement};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One open connection and the statements prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// The statement `sql`, prepared on this connection once.
    pub(super) fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

struct State {
    idle: Vec<Conn>,
    /// Connections open, idle or borrowed.
    open: usize,
}

pub(super) struct Pool {
    config: ::postgres::Config,
    tls: Tls,
    max: usize,
    /// How long a borrower waits for a free connection when `max` are borrowed.
    wait: Duration,
    state: Mutex<State>,
    freed: Condvar,
}

/// A borrowed connection, given back when dropped.
pub(super) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let mut state = self.pool.lock();
        if conn.client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(conn);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

/// Runs `f` on this thread, or, when this thread is in a tokio runtime's context
/// (async code, or a blocking thread of the runtime), on a scoped thread outside it:
/// the client may block there. A panic of `f` goes on here.
pub(super) fn outside_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a connection blocks on its runtime too.
        let idle = std::mem::take(&mut self.lock().idle);
        outside_runtime(move || drop(idle));
    }
}

impl Pool {
    /// Runs `f` with a connection of the pool, where the client may block.
    pub(super) fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        outside_runtime(|| {
            let mut lease = self.get()?;
            let outcome = f(&mut lease);
            if outcome.as_ref().is_err_and(StoreError::is_unavailable) {
                // The server went away (a restart, a failover): the idle connections
                // are as dead as this one. Dropped now, each would fail a request of
                // its own before the pool learned it.
                let idle = std::mem::take(&mut self.lock().idle);
                self.lock().open -= idle.len();
                drop(idle);
            }
            outcome
        })
    }

    pub(super) fn new(config: ::postgres::Config, tls: Tls, max: usize, wait: Duration) -> Self {
        Pool {
            config,
            tls,
            max: max.max(1),
            wait,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain values, consistent at every unlock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection: an idle one, a new one if fewer than `max` are open, or the first
    /// one given back (an error after the pool's wait).
    fn get(&self) -> Result<Lease<'_>, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                let connected = match &self.tls {
                    Tls::Off => self.config.connect(NoTls),
                    Tls::On(tls) => self.config.connect(tls.clone()),
                };
                return match connected {
                    Ok(client) => Ok(Lease {
                        pool: self,
                        conn: Some(Conn {
                            client,
                            statements: HashMap::new(),
                        }),
                    }),
                    Err(error) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(StoreError::unavailable(format!(
                            "cannot connect to PostgreSQL: {}",
                            super::describe(&error)
                        )))
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::unavailable(format!(
                    "no free PostgreSQL connection within {:?} ({} in use)",
                    self.wait, self.max
                )));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
