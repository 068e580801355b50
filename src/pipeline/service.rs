//! The service manager's view of `run` (systemd's `Type=notify`): ready once subscribed to
//! FreeSWITCH with the outbox open, reloading, stopping, and alive (the watchdog). Outside
//! systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells the service manager how `run` is.
#[derive(Debug)]
pub(super) struct ServiceManager {
    /// Half the watchdog period systemd set (`WatchdogSec=`), when it set one.
    watchdog: Option<Duration>,
    ready: bool,
}

impl ServiceManager {
    /// Reads what systemd asked for from the environment.
    pub(super) fn from_env() -> ServiceManager {
        let mut usec = 0;
        let watchdog =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2);
        ServiceManager {
            watchdog,
            ready: false,
        }
    }

    /// How often to say "alive", if systemd watches.
    pub(super) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, state: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::debug!(error = %e, "could not notify the service manager");
        }
    }

    /// Subscribed to FreeSWITCH (the outbox, the routing server and the admin endpoint are up
    /// already): the first time, ready.
    pub(super) fn subscribed(&mut self) {
        if !std::mem::replace(&mut self.ready, true) {
            self.send(&[NotifyState::Ready, NotifyState::Status("subscribed")]);
        }
    }

    /// A configuration reload begins; [`ServiceManager::reloaded`] ends it.
    pub(super) fn reloading(&self) {
        // systemd's Type=notify-reload wants the time with it; plain Type=notify ignores it.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is done.
    pub(super) fn reloaded(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// Shutting down.
    pub(super) fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// The event loop is alive.
    pub(super) fn alive(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
