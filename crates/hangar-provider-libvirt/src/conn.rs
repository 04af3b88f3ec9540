//! The provider's one libvirt connection: opened on first use (so the daemon
//! starts while libvirtd is down) and reopened after it drops (libvirtd
//! restarts, a remote host reboots).

use std::sync::{Arc, Mutex, PoisonError};

use virt::connect::Connect;

use crate::error::LibvirtError;

#[derive(Debug)]
pub(crate) struct Connection {
    uri: String,
    slot: Mutex<Option<Arc<Connect>>>,
}

impl Connection {
    pub(crate) fn new(uri: String) -> Self {
        Self {
            uri,
            slot: Mutex::new(None),
        }
    }

    /// The live connection, opening one if there is none. Blocking.
    pub(crate) fn get(&self) -> Result<Arc<Connect>, LibvirtError> {
        // Held across the open so concurrent callers wait for one connection
        // instead of each opening their own.
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = slot.as_ref() {
            if conn.is_alive().unwrap_or(false) {
                return Ok(Arc::clone(conn));
            }
            tracing::warn!(libvirt.uri = %self.uri, "libvirt connection dropped; reconnecting");
            *slot = None;
        }
        let conn = Connect::open(Some(&self.uri)).map_err(|source| LibvirtError::Connect {
            uri: self.uri.clone(),
            source,
        })?;
        tracing::info!(libvirt.uri = %self.uri, "connected to libvirt");
        let conn = Arc::new(conn);
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Forgets `conn` if it is still the current one, so the next call
    /// reconnects.
    pub(crate) fn invalidate(&self, conn: &Arc<Connect>) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }
}
