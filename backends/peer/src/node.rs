//! One libp2p node: the swarm, its event loop, and a cloneable handle.
//!
//! The gateway runs one node for all its peer backends; `shardgate peer`
//! runs one that serves its disk. Both are DHT servers when they listen
//! (a node that can only dial out is a DHT client), both enforce an
//! allowlist after the noise handshake, and both keep connections open
//! for an hour of silence, so that a peer that dialed out stays reachable
//! over its own connection.
//!
//! The loop also keeps the nodes it is told to watch reachable: every few
//! seconds a watched peer that is not connected is dialed at the addresses
//! known for it (configured, learnt from identify or Kademlia), and looked
//! up in the DHT by its PeerId, so a peer that came back on another port is
//! found again without a configuration change.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ListenError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, allow_block_list, connection_limits, identify, kad,
    noise, ping, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::tls;
use tracing::{debug, info, warn};

use crate::PeerError;
use crate::wire::{
    CONTROL_PROTOCOL, ControlRequest, ControlResponse, KAD_PROTOCOL, address_record_key,
    control_codec,
};

/// How long a connection with no traffic stays open.
const IDLE_CONNECTION: Duration = Duration::from_secs(3600);
/// How often watched peers and bootstrap nodes are checked.
const MAINTENANCE: Duration = Duration::from_secs(2);
/// How often a missing watched peer is looked up in the DHT.
const FIND_EVERY: Duration = Duration::from_secs(6);
/// DHT queries in flight to announce blobs.
const PROVIDES_IN_FLIGHT: usize = 8;
/// A DHT query's time limit.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listening node republishes its addresses in the DHT (and
/// at once when they change).
const REPUBLISH_ADDRESSES: Duration = Duration::from_secs(600);

/// Answers inbound control requests (a peer's storage).
#[async_trait]
pub trait ControlService: Send + Sync + 'static {
    /// The response to `request` from `from`.
    async fn handle(&self, from: PeerId, request: ControlRequest) -> ControlResponse;
}

/// What a node is and whom it talks to.
pub struct NodeConfig {
    /// Its identity.
    pub keypair: Keypair,
    /// Addresses to listen on (none: dial out only).
    pub listen: Vec<Multiaddr>,
    /// Nodes dialed at start and whenever none of them is connected
    /// (a `/p2p/ID` suffix names the node expected there).
    pub bootstrap: Vec<Multiaddr>,
    /// The only nodes it accepts connections with.
    pub allow: HashSet<PeerId>,
    /// Peers to keep reachable, with the addresses configured for them.
    pub watch: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Inbound control requests go here; `None` refuses them.
    pub serve: Option<Arc<dyn ControlService>>,
    /// How long a control request may take.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("allow", &self.allow)
            .field("watch", &self.watch)
            .field("serves", &self.serve.is_some())
            .finish()
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    control: request_response::cbor::Behaviour<ControlRequest, ControlResponse>,
    streams: libp2p_stream::Behaviour,
}

type ControlReply = oneshot::Sender<Result<ControlResponse, String>>;

enum Command {
    Control {
        peer: PeerId,
        request: ControlRequest,
        reply: ControlReply,
    },
    Respond {
        channel: ResponseChannel<ControlResponse>,
        response: ControlResponse,
    },
    Providers {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
}

/// Announcements to the DHT: a blob this node now holds, or no longer.
enum Announce {
    Provide(Vec<u8>),
    Unprovide(Vec<u8>),
}

#[derive(Default)]
struct State {
    listen_addrs: Vec<Multiaddr>,
}

/// A handle on a running node; the node stops when the last one is dropped.
#[derive(Clone)]
pub struct NodeHandle {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    announce: mpsc::UnboundedSender<Announce>,
    streams: libp2p_stream::Control,
    state: Arc<Mutex<State>>,
    /// The watched peers: the only ones a blob is looked for on.
    known: Arc<HashSet<PeerId>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses it listens on, each ending in `/p2p/ID`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let state = lock(&self.state);
        state
            .listen_addrs
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.local)))
            .collect()
    }

    /// Whether `peer` is one of the peers this node was told to watch (a
    /// gateway's configured peers).
    pub fn is_known(&self, peer: &PeerId) -> bool {
        self.known.contains(peer)
    }

    /// Sends a control request and waits for its answer (the request
    /// times out inside the node).
    pub async fn control(
        &self,
        peer: PeerId,
        request: ControlRequest,
    ) -> Result<ControlResponse, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Control {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| "the peer network stopped".to_string())?;
        rx.await
            .map_err(|_| "the peer network stopped".to_string())?
    }

    /// A stream control, to open blob streams.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// Announces in the DHT that this node holds the blob with this key.
    pub fn provide(&self, key: Vec<u8>) {
        let _ = self.announce.send(Announce::Provide(key));
    }

    /// Withdraws an announcement.
    pub fn unprovide(&self, key: Vec<u8>) {
        let _ = self.announce.send(Announce::Unprovide(key));
    }

    /// The nodes the DHT says hold the blob with this key.
    pub async fn providers(&self, key: Vec<u8>) -> Vec<PeerId> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Providers { key, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// An address record's addresses, when it is signed by `peer`'s key.
fn verified_addresses(value: &[u8], peer: &PeerId) -> Option<libp2p::core::PeerRecord> {
    let envelope = libp2p::core::SignedEnvelope::from_protobuf_encoding(value).ok()?;
    let record = libp2p::core::PeerRecord::from_signed_envelope(envelope).ok()?;
    (record.peer_id() == *peer).then_some(record)
}

/// The PeerId a multiaddr names in its `/p2p/ID` suffix.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Starts a node: binds its listeners (waiting until each reports an
/// address) and runs its loop on the current runtime.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, PeerError> {
    let local = config.keypair.public().to_peer_id();
    let transport = |e: &dyn std::fmt::Display| PeerError::Transport(e.to_string());
    let serves = config.serve.is_some();
    let dht_server = !config.listen.is_empty();
    let allow = config.allow.clone();
    let mut swarm = SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            (tls::Config::new, noise::Config::new),
            yamux::Config::default,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        // `/dns4/NAME/...` addresses (containers and Kubernetes name their
        // peers and gateways), resolved with the system's resolver.
        .with_dns()
        .map_err(|e| transport(&e))?
        .with_behaviour(|key| {
            let mut allowed = allow_block_list::Behaviour::default();
            for peer in &allow {
                allowed.allow_peer(*peer);
            }
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(64))
                    .with_max_established_incoming(Some(512))
                    .with_max_established_per_peer(Some(4)),
            );
            let identify = identify::Behaviour::new(
                identify::Config::new("/shardgate/1".into(), key.public())
                    .with_agent_version(format!("shardgate/{}", env!("CARGO_PKG_VERSION"))),
            );
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config.set_query_timeout(QUERY_TIMEOUT);
            if let Some(n) = NonZeroUsize::new(8) {
                kad_config.set_replication_factor(n);
            }
            let store = MemoryStore::with_config(
                local,
                // Keys provided (this node's blobs and other nodes'
                // records it keeps) at most: 256 Ki keys of at most 4
                // providers each bound what allowlisted nodes can make it
                // hold; a blob is held by one peer.
                MemoryStoreConfig {
                    max_provided_keys: 1 << 18,
                    max_providers_per_key: 4,
                    ..MemoryStoreConfig::default()
                },
            );
            let mut kad = kad::Behaviour::with_config(local, store, kad_config);
            kad.set_mode(Some(match dht_server {
                true => kad::Mode::Server,
                false => kad::Mode::Client,
            }));
            let codec = control_codec();
            let support = match serves {
                true => ProtocolSupport::Inbound,
                false => ProtocolSupport::Outbound,
            };
            let control = request_response::Behaviour::with_codec(
                codec,
                [(CONTROL_PROTOCOL, support)],
                request_response::Config::default()
                    .with_request_timeout(config.request_timeout)
                    .with_max_concurrent_streams(256),
            );
            Behaviour {
                allow: allowed,
                limits,
                identify,
                ping: ping::Behaviour::default(),
                kad,
                control,
                streams: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
        .build();

    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| PeerError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }
    let state = Arc::new(Mutex::new(State::default()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !listeners.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| PeerError::Transport("listeners did not start within 10 s".into()))?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                listeners.remove(&listener_id);
                lock(&state).listen_addrs.push(address);
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                return Err(PeerError::Transport(format!(
                    "listener on {addresses:?} closed: {reason:?}"
                )));
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(PeerError::Transport(format!("listener failed: {error}")));
            }
            _ => {}
        }
    }
    let streams = swarm.behaviour().streams.new_control();
    let known: HashSet<PeerId> = config.watch.iter().map(|(p, _)| *p).collect();
    let (commands, rx) = mpsc::channel(1024);
    let (announce, announce_rx) = mpsc::unbounded_channel();
    let mut event_loop = EventLoop {
        swarm,
        serve: config.serve,
        commands: rx,
        announce: announce_rx,
        own: commands.downgrade(),
        state: state.clone(),
        bootstrap: config.bootstrap,
        watch: config.watch,
        pending_control: HashMap::new(),
        pending_providers: HashMap::new(),
        finding: HashMap::new(),
        last_find: HashMap::new(),
        provide_queue: VecDeque::new(),
        queued: HashSet::new(),
        providing: HashSet::new(),
        published: Vec::new(),
        publish_at: Instant::now(),
        publishing: None,
        looking_up: HashMap::new(),
        keypair: config.keypair.clone(),
    };
    for (peer, addrs) in event_loop.watch.clone() {
        for addr in addrs {
            event_loop.swarm.add_peer_address(peer, addr.clone());
            event_loop
                .swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr);
        }
    }
    event_loop.dial_bootstrap();
    tokio::spawn(event_loop.run());
    Ok(NodeHandle {
        local,
        commands,
        announce,
        streams,
        state,
        known: Arc::new(known),
    })
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    serve: Option<Arc<dyn ControlService>>,
    commands: mpsc::Receiver<Command>,
    announce: mpsc::UnboundedReceiver<Announce>,
    /// For responses computed off the loop; weak, so that the loop ends
    /// when the last handle goes.
    own: mpsc::WeakSender<Command>,
    state: Arc<Mutex<State>>,
    bootstrap: Vec<Multiaddr>,
    watch: Vec<(PeerId, Vec<Multiaddr>)>,
    pending_control: HashMap<OutboundRequestId, ControlReply>,
    pending_providers: HashMap<kad::QueryId, (oneshot::Sender<Vec<PeerId>>, HashSet<PeerId>)>,
    finding: HashMap<kad::QueryId, PeerId>,
    last_find: HashMap<PeerId, Instant>,
    provide_queue: VecDeque<Vec<u8>>,
    /// The keys in `provide_queue` still to announce.
    queued: HashSet<Vec<u8>>,
    providing: HashSet<kad::QueryId>,
    /// The addresses last published, and when to publish again.
    published: Vec<Multiaddr>,
    publish_at: Instant,
    publishing: Option<(kad::QueryId, Vec<Multiaddr>)>,
    /// Address record lookups of missing watched peers, with the newest
    /// record found so far.
    looking_up: HashMap<kad::QueryId, (PeerId, Option<libp2p::core::PeerRecord>)>,
    keypair: Keypair,
}

impl EventLoop {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(MAINTENANCE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(announce) = self.announce.recv() => {
                    match announce {
                        Announce::Provide(key) => {
                            if self.queued.insert(key.clone()) {
                                self.provide_queue.push_back(key);
                            }
                        }
                        Announce::Unprovide(key) => {
                            // A provide still queued must not follow it.
                            self.queued.remove(&key);
                            self.swarm.behaviour_mut().kad.stop_providing(&kad::RecordKey::new(&key));
                        }
                    }
                    self.pump_provides();
                }
                _ = tick.tick() => self.maintain(),
            }
        }
        debug!("peer network stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Control {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request(&peer, request);
                self.pending_control.insert(id, reply);
            }
            Command::Respond { channel, response } => {
                // The requester may have gone: nothing to do then.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_response(channel, response);
            }
            Command::Providers { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.pending_providers.insert(id, (reply, HashSet::new()));
            }
        }
    }

    fn dial_bootstrap(&mut self) {
        let connected = self
            .bootstrap
            .iter()
            .any(|a| peer_of(a).is_some_and(|p| self.swarm.is_connected(&p)));
        if connected {
            return;
        }
        for addr in self.bootstrap.clone() {
            let opts = match peer_of(&addr) {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%addr, "bootstrap dial: {e}");
            }
        }
    }

    /// Publishes this node's listen addresses under its PeerId, when they
    /// changed or are due again.
    fn publish_addresses(&mut self, now: Instant) {
        let addrs = lock(&self.state).listen_addrs.clone();
        if addrs.is_empty()
            || self.publishing.is_some()
            || (addrs == self.published && now < self.publish_at)
        {
            return;
        }
        // Signed by this node's key: a record naming other addresses
        // under this PeerId cannot be made by anyone else.
        let value = match libp2p::core::PeerRecord::new(&self.keypair, addrs.clone()) {
            Ok(record) => record.into_signed_envelope().into_protobuf_encoding(),
            Err(e) => {
                debug!("cannot sign the address record: {e}");
                return;
            }
        };
        let key = address_record_key(self.swarm.local_peer_id());
        let record = kad::Record::new(key, value);
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One)
        {
            Ok(id) => self.publishing = Some((id, addrs)),
            Err(e) => debug!("cannot publish addresses: {e}"),
        }
    }

    /// Redials bootstrap nodes and watched peers, looks up those missing.
    fn maintain(&mut self) {
        self.dial_bootstrap();
        let now = Instant::now();
        self.publish_addresses(now);
        for (peer, addrs) in self.watch.clone() {
            if self.swarm.is_connected(&peer) {
                continue;
            }
            for addr in addrs {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            let dial = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(dial) {
                debug!(%peer, "dial: {e}");
            }
            let due = self
                .last_find
                .get(&peer)
                .is_none_or(|t| now.duration_since(*t) >= FIND_EVERY);
            if due && !self.finding.values().any(|p| *p == peer) {
                self.last_find.insert(peer, now);
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.finding.insert(id, peer);
                let key = kad::RecordKey::new(&address_record_key(&peer));
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.looking_up.insert(id, (peer, None));
            }
        }
    }

    /// Addresses the DHT gave for a watched peer: dialed (the handshake
    /// checks that the PeerId answers there).
    fn found(&mut self, target: PeerId, addrs: Vec<Multiaddr>) {
        if addrs.is_empty() || self.swarm.is_connected(&target) {
            return;
        }
        info!(peer = %target, ?addrs, "found a peer through the DHT");
        for addr in &addrs {
            self.swarm.add_peer_address(target, addr.clone());
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&target, addr.clone());
        }
        let dial = DialOpts::peer_id(target)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(dial) {
            debug!(peer = %target, "dial: {e}");
        }
    }

    fn pump_provides(&mut self) {
        while self.providing.len() < PROVIDES_IN_FLIGHT {
            let Some(key) = self.provide_queue.pop_front() else {
                return;
            };
            if !self.queued.remove(&key) {
                continue;
            }
            match self
                .swarm
                .behaviour_mut()
                .kad
                .start_providing(kad::RecordKey::new(&key))
            {
                Ok(id) => {
                    self.providing.insert(id);
                }
                Err(e) => warn!("cannot announce a blob in the DHT: {e}"),
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let mut state = lock(&self.state);
                if !state.listen_addrs.contains(&address) {
                    state.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                lock(&self.state).listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } if num_established.get() == 1 => {
                info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                info!(peer = %peer_id, cause = ?cause.map(|c| c.to_string()), "peer disconnected");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error: ListenError::Denied { cause },
                ..
            } => {
                // The cause proper (which peer, which limit) is the source.
                let why = std::error::Error::source(&cause)
                    .map_or_else(|| cause.to_string(), |s| s.to_string());
                warn!("refused a connection from {send_back_addr}: {why}");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, "dial failed: {error}");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                debug!(peer = %peer_id, addrs = ?info.listen_addrs, protocols = ?info.protocols, "identified");
                // Every node here is allowlisted; one that listens is a
                // DHT server others may need to find.
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Control(event) => self.on_control(event),
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => self.on_query(id, result, step.last),
            _ => {}
        }
    }

    fn on_control(&mut self, event: request_response::Event<ControlRequest, ControlResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Some(service) = self.serve.clone() else {
                        return;
                    };
                    let Some(back) = self.own.upgrade() else {
                        return;
                    };
                    tokio::spawn(async move {
                        let response = service.handle(peer, request).await;
                        let _ = back.send(Command::Respond { channel, response }).await;
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_control.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_control.remove(&request_id) {
                    let _ = reply.send(Err(format!("peer {peer}: {error}")));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, "inbound control request failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        match result {
            kad::QueryResult::GetProviders(result) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result
                    && let Some((_, found)) = self.pending_providers.get_mut(&id)
                {
                    found.extend(providers);
                }
                // All of them: a stale record (the node the blob left)
                // may come first.
                if last && let Some((reply, found)) = self.pending_providers.remove(&id) {
                    let _ = reply.send(found.into_iter().collect());
                }
            }
            kad::QueryResult::GetClosestPeers(result) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                debug!(peers = ?peers, "closest peers");
                if let Some(target) = self.finding.remove(&id) {
                    for info in peers.into_iter().filter(|i| i.peer_id == target) {
                        self.found(target, info.addrs);
                    }
                }
            }
            kad::QueryResult::PutRecord(result) => {
                if let Some((query, addrs)) = self.publishing.take_if(|(q, _)| *q == id) {
                    let _ = query;
                    match result {
                        Ok(_) => {
                            debug!(?addrs, "addresses published in the DHT");
                            self.published = addrs;
                            self.publish_at = Instant::now() + REPUBLISH_ADDRESSES;
                        }
                        Err(e) => debug!("publishing addresses: {e}"),
                    }
                }
            }
            kad::QueryResult::GetRecord(result) => {
                let Some(target) = self.looking_up.get(&id).map(|(p, _)| *p) else {
                    return;
                };
                if let Ok(kad::GetRecordOk::FoundRecord(found)) = result
                    && let Some(record) = verified_addresses(&found.record.value, &target)
                    && let Some((_, best)) = self.looking_up.get_mut(&id)
                    && best.as_ref().is_none_or(|b| b.seq() < record.seq())
                {
                    *best = Some(record);
                }
                if last && let Some((_, best)) = self.looking_up.remove(&id) {
                    let addrs = best
                        .map(|r| r.addresses().iter().take(16).cloned().collect())
                        .unwrap_or_default();
                    self.found(target, addrs);
                }
            }
            kad::QueryResult::StartProviding(result) if self.providing.remove(&id) => {
                if let Err(e) = result {
                    debug!("announcing a blob: {e}");
                }
                self.pump_provides();
            }
            _ => {}
        }
    }
}
