//! Loading a plugin and calling it inside its bounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

use crate::cache;
use crate::wit::{Level, Placement, PlacementPre, Request};

/// The only interfaces a plugin may import.
const ALLOWED_IMPORT_PREFIX: &str = "shardgate:placement/";
/// The epoch tick: deadlines are counted in these.
const TICK: Duration = Duration::from_millis(1);
/// Instances kept for reuse per plugin.
const POOL_SIZE: usize = 4;

/// The bounds of one call.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most linear memory an instance may use.
    pub memory_bytes: usize,
    /// The longest a call may run (wall clock).
    pub deadline: Duration,
}

impl Default for Limits {
    /// 64 MiB and 100 ms: enough for the Python and JavaScript runtimes
    /// (12-30 MiB), far above what a placement needs (a C plugin answers
    /// in about 10 µs).
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            deadline: Duration::from_millis(100),
        }
    }
}

/// Why a plugin could not be loaded or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{path}: cannot read the plugin: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a WebAssembly component of shardgate:placement@0.1.0: {reason}")]
    NotAPlugin { path: PathBuf, reason: String },
    #[error(
        "{path}: imports {import}, but a placement plugin may import only shardgate:placement/* (no WASI)"
    )]
    ForbiddenImport { path: PathBuf, import: String },
    #[error("plugin {plugin} ran out of time ({limit:?})")]
    Timeout { plugin: String, limit: Duration },
    #[error("plugin {plugin} ran out of memory ({limit} bytes)")]
    OutOfMemory { plugin: String, limit: usize },
    #[error("plugin {plugin} trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin {plugin} refused: {message}")]
    Refused { plugin: String, message: String },
}

/// What a plugin did, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub instances: AtomicU64,
}

/// The engine shared by all plugins, and its epoch ticker.
#[derive(Debug)]
pub struct PluginHost {
    engine: Engine,
    ticker: Arc<Ticker>,
    cache_dir: Option<PathBuf>,
}

/// Advances the engine's epoch every [`TICK`] while guest code runs, and
/// sleeps otherwise: a gateway whose plugins are idle (or that has none)
/// is not woken a thousand times a second. Deadlines count ticks from the
/// start of each call, so ticks skipped while idle change nothing.
#[derive(Debug, Default)]
struct Ticker {
    /// Guest calls (and instantiations) running now.
    running: Mutex<usize>,
    wake: Condvar,
    /// Ticks given so far (for tests).
    ticks: AtomicU64,
}

impl Ticker {
    /// Runs until `engine` is gone.
    fn run(&self, engine: wasmtime::EngineWeak) {
        loop {
            {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                while *running == 0 {
                    // Woken by a call; or, every second, to see whether
                    // the engine is gone.
                    let (guard, _) = self
                        .wake
                        .wait_timeout(running, Duration::from_secs(1))
                        .unwrap_or_else(|p| p.into_inner());
                    running = guard;
                    if *running == 0 && engine.upgrade().is_none() {
                        return;
                    }
                }
            }
            std::thread::sleep(TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ticks while the returned guard lives.
    fn running(self: &Arc<Self>) -> Running {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.wake.notify_one();
        Running(self.clone())
    }
}

/// A guest call in progress: the ticker ticks while one lives.
struct Running(Arc<Ticker>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
    }
}

impl PluginHost {
    /// An engine with epoch interruption, ticking every millisecond while
    /// guest code runs, and compiled artifacts cached in `cache_dir` (none:
    /// compile every time). The ticker lives as long as the engine (the
    /// host, or any plugin loaded from it): deadlines keep working after
    /// the host is dropped.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, wasmtime::Error> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let ticker = Arc::new(Ticker::default());
        let (ticking, engine_weak) = (ticker.clone(), engine.weak());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || ticking.run(engine_weak))
            .map_err(wasmtime::Error::msg)?;
        Ok(Self {
            engine,
            ticker,
            cache_dir,
        })
    }

    /// Epoch ticks given so far.
    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.ticker.ticks.load(Ordering::Relaxed)
    }

    /// Loads the plugin at `path`: a component of the placement world that
    /// imports nothing else. Errors name the file.
    pub fn load(&self, path: &Path, limits: Limits) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.into(),
            source,
        })?;
        self.load_bytes(path, &bytes, limits)
    }

    /// Like [`PluginHost::load`], from bytes (`path` names it in errors).
    pub fn load_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let not_a_plugin = |reason: String| PluginError::NotAPlugin {
            path: path.into(),
            reason,
        };
        let started = std::time::Instant::now();
        let (component, cached) = cache::load(&self.engine, self.cache_dir.as_deref(), bytes)
            .map_err(|e| not_a_plugin(format!("{e:#}")))?;
        for (name, item) in component.component_type().imports(&self.engine) {
            if !name.starts_with(ALLOWED_IMPORT_PREFIX)
                || !matches!(item.ty, ComponentItem::ComponentInstance(_))
            {
                return Err(PluginError::ForbiddenImport {
                    path: path.into(),
                    import: name.to_string(),
                });
            }
        }
        let mut linker = Linker::<State>::new(&self.engine);
        Placement::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| not_a_plugin(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PlacementPre::new)
            .map_err(|e| not_a_plugin(format!("{e:#}")))?;
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
        tracing::info!(plugin = %name, cached, elapsed_ms = started.elapsed().as_millis() as u64, "placement plugin loaded");
        Ok(Plugin {
            name,
            engine: self.engine.clone(),
            ticker: self.ticker.clone(),
            pre,
            limits,
            pool: Mutex::new(Vec::new()),
            stats: Stats::default(),
        })
    }
}

/// Per-instance host state.
struct State {
    limits: StoreLimits,
    plugin: String,
    logged: u32,
}

/// Lines a plugin may log per call.
const LOG_LINES_PER_CALL: u32 = 16;

impl crate::wit::shardgate::placement::types::Host for State {}

impl crate::wit::shardgate::placement::host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.logged += 1;
        if self.logged > LOG_LINES_PER_CALL {
            return;
        }
        let message: String = message.chars().take(1000).collect();
        let plugin = &self.plugin;
        match level {
            Level::Debug => tracing::debug!(%plugin, "{message}"),
            Level::Info => tracing::info!(%plugin, "{message}"),
            Level::Warn => tracing::warn!(%plugin, "{message}"),
            Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }
}

struct Instance {
    store: Store<State>,
    bindings: Placement,
}

/// A loaded plugin.
pub struct Plugin {
    name: String,
    engine: Engine,
    ticker: Arc<Ticker>,
    pre: PlacementPre<State>,
    limits: Limits,
    pool: Mutex<Vec<Instance>>,
    stats: Stats,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn instance(&self) -> Result<Instance, PluginError> {
        if let Some(i) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(i);
        }
        let state = State {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            plugin: self.name.clone(),
            logged: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks());
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.failure(&e))?;
        self.stats.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Instance { store, bindings })
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64
    }

    /// Classifies a failed call (the instance is discarded by the caller).
    fn failure(&self, e: &wasmtime::Error) -> PluginError {
        let plugin = self.name.clone();
        if let Some(trap) = e.downcast_ref::<Trap>() {
            if *trap == Trap::Interrupt {
                return PluginError::Timeout {
                    plugin,
                    limit: self.limits.deadline,
                };
            }
            return PluginError::Trap {
                plugin,
                reason: trap.to_string(),
            };
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") {
            return PluginError::OutOfMemory {
                plugin,
                limit: self.limits.memory_bytes,
            };
        }
        PluginError::Trap {
            plugin,
            reason: text,
        }
    }

    /// Runs `call` on a pooled instance within the limits. An instance
    /// that failed is dropped; a fresh one replaces it on the next call.
    fn with_instance<T>(
        &self,
        call: impl FnOnce(&mut Instance) -> Result<Result<T, String>, wasmtime::Error>,
    ) -> Result<T, PluginError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        // Guest code runs from here (instantiation included): deadlines
        // need the epoch to move.
        let _running = self.ticker.running();
        let mut instance = self.instance().inspect_err(|_| {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        instance.store.set_epoch_deadline(self.deadline_ticks());
        instance.store.data_mut().logged = 0;
        let result = call(&mut instance);
        match result {
            Ok(answer) => {
                if let Ok(mut pool) = self.pool.lock()
                    && pool.len() < POOL_SIZE
                {
                    pool.push(instance);
                }
                answer.map_err(|message| {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    PluginError::Refused {
                        plugin: self.name.clone(),
                        message,
                    }
                })
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(self.failure(&e))
            }
        }
    }

    /// Asks the plugin to check the policy's parameters.
    pub fn validate_params(&self, params: &[(String, String)]) -> Result<(), PluginError> {
        let params = params.to_vec();
        self.with_instance(|i| i.bindings.call_validate_params(&mut i.store, &params))
    }

    /// Asks the plugin where each fragment goes: candidate indices.
    pub fn place(&self, request: &Request) -> Result<Vec<u32>, PluginError> {
        self.with_instance(|i| i.bindings.call_place(&mut i.store, request))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_epoch_ticks_only_while_guest_code_runs() {
        let host = PluginHost::new(None).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(host.ticks(), 0, "no guest code ran: no tick");
        {
            let _running = host.ticker.running();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(host.ticks() >= 3, "ticking while a call runs");
        // The tick in progress when the call ended may still land.
        std::thread::sleep(Duration::from_millis(20));
        let settled = host.ticks();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(host.ticks(), settled, "idle again: no tick");
    }
}
