//! Changing the log level of a running broker.
//!
//! The tracing subscriber belongs to the program that embeds the broker (the
//! `stompbox` binary installs one with a reloadable filter), so the admin API reaches
//! it through a control the program installs once; without one, the API says the
//! level cannot be changed here.

use std::sync::OnceLock;

/// Reads and replaces the log filter of the running program.
pub trait LogLevel: Send + Sync {
    /// The filter now, as an `EnvFilter` directive (`info`, `info,stompbox=debug`).
    fn get(&self) -> String;
    /// Replaces the filter; an invalid directive changes nothing and says why.
    fn set(&self, directive: &str) -> Result<(), String>;
}

static CONTROL: OnceLock<Box<dyn LogLevel>> = OnceLock::new();

/// Installs the program's log-level control; only the first call takes effect.
pub fn install_log_level(control: Box<dyn LogLevel>) {
    let _ = CONTROL.set(control);
}

/// The control of a `tracing_subscriber` registry whose filter is a reloadable
/// `EnvFilter` layer: what the `stompbox` binary installs (and tests that read logs).
pub struct ReloadableFilter(
    pub  tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
);

impl LogLevel for ReloadableFilter {
    fn get(&self) -> String {
        self.0.with_current(|f| f.to_string()).unwrap_or_default()
    }

    fn set(&self, directive: &str) -> Result<(), String> {
        let filter =
            tracing_subscriber::EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// The installed control, if any.
pub(crate) fn control() -> Option<&'static dyn LogLevel> {
    CONTROL.get().map(|b| &**b)
}
