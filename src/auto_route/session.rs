//! Session affinity: the model that served a conversation, remembered for its next turns.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserializer as _;
use tokio::time::Instant;

use crate::payload::{ChatRequest, Messages, Part, Str};
use crate::ApiError;

/// The longest `session_id` read, in bytes: a longer one is refused (400
/// `invalid_session_id`). An id names a conversation; it need not hold one.
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// Session affinity for [`AutoRouteLayer::session_affinity`](super::AutoRouteLayer::session_affinity):
/// how many conversations are remembered, and for how long.
///
/// Defaults ([`new`](Self::new)): 10,000 conversations, one hour after the last answer.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_router::auto_route::{Catalog, ModelProfile, SessionAffinity};
/// use tower_llm_router::AutoRouteLayer;
///
/// let catalog = Catalog::from_profiles([ModelProfile::new("small", 16_000, 0.1, 0.4)]);
/// // Up to 50,000 conversations, each for half an hour after its last answer.
/// let affinity = SessionAffinity::new()
///     .max_sessions(50_000)
///     .ttl(Duration::from_secs(30 * 60));
/// let layer = AutoRouteLayer::new(catalog).session_affinity(affinity);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "this returns the changed value; `self` is not changed in place"]
pub struct SessionAffinity {
    max_sessions: usize,
    ttl: Duration,
}

impl SessionAffinity {
    /// 10,000 conversations, each forgotten an hour after its last successful answer.
    pub const fn new() -> Self {
        Self {
            max_sessions: 10_000,
            ttl: Duration::from_secs(60 * 60),
        }
    }

    /// The most conversations remembered; past it, the one answered longest ago is forgotten
    /// (exactly up to 64 conversations; beyond, within each of up to 16 shards, so nearly). `0`
    /// remembers none: affinity is off.
    pub const fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// How long a conversation is remembered after its last successful answer (each one
    /// starts it again). `Duration::ZERO` remembers none; anything over a century (such as
    /// `Duration::MAX`) counts as a century.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }
}

impl Default for SessionAffinity {
    fn default() -> Self {
        Self::new()
    }
}

/// Whose conversations a request's belong to: a request extension (for example a tenant's or
/// an API key's id, hashed to 64 bits) that keeps the conversations of one scope apart from
/// every other's in the [`SessionAffinity`] store.
///
/// Without it the store is one for every client: a later turn that opens exactly as another
/// client's conversation did (same system text and first message, within the ttl) lands on
/// that conversation's model, which tells the client such a conversation exists. A service
/// shared by clients who must not learn of each other sets a scope per client in front of the
/// layer; a request without one is in the unscoped store, as before.
///
/// ```
/// use tower_llm_router::auto_route::SessionScope;
///
/// let mut request = http::Request::new(());
/// // The id of the client's API key, as the service in front knows it.
/// request.extensions_mut().insert(SessionScope(42));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionScope(pub u64);

/// A conversation, as a keyed hash of its `session_id` or of its opening (no text kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey(u64);

/// Conversations that fit in one shard before the store is split: below this many, one
/// lock and one exact least-recently-answered order.
const PER_SHARD: usize = 64;
/// The longest time to live: about a century, as good as forever, and far inside the range of
/// any platform's `Instant`.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// The most shards: enough that two cores, or a few more, seldom wait on one lock.
const MAX_SHARDS: usize = 16;

/// The remembered conversations: shards of a map from key to model, each with its own lock,
/// held for one map operation (never across an `await`).
pub(crate) struct Sessions {
    /// Per-process random keys (SipHash): a client cannot make two conversations collide.
    seed: RandomState,
    ttl: Duration,
    shards: Box<[Mutex<Shard>]>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("shards", &self.shards.len())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// The store `affinity` asks for; `None` when it remembers nothing.
    pub(crate) fn new(affinity: SessionAffinity) -> Option<Self> {
        let SessionAffinity { max_sessions, ttl } = affinity;
        // `Instant + Duration` panics past the clock's range: `Duration::MAX` means forever.
        let ttl = ttl.min(FOREVER);
        if max_sessions == 0 || ttl.is_zero() {
            return None;
        }
        let count = max_sessions.div_ceil(PER_SHARD).clamp(1, MAX_SHARDS);
        // The bound split so that the shards hold `max_sessions` together, no more.
        let shards = (0..count)
            .map(|i| {
                let capacity = max_sessions / count + usize::from(i < max_sessions % count);
                Mutex::new(Shard::new(capacity))
            })
            .collect();
        Some(Self {
            seed: RandomState::new(),
            ttl,
            shards,
        })
    }

    /// The conversation `request` belongs to: its `session_id`, else its system text and
    /// first user message. `None` when it has neither (no user message). With it, whether the
    /// request continues a conversation (a `session_id`, or messages after the first user
    /// message): only then is the model that served it looked up. A first turn has no
    /// conversation to keep; it only shares its opening with others (the same question asked
    /// twice, or by two users), which must not override its own ranking or `cost_tier`.
    pub(crate) fn key(
        &self,
        request: &ChatRequest,
        prompt: &Messages<'_>,
        scope: Option<SessionScope>,
    ) -> Result<Option<(SessionKey, bool)>, ApiError> {
        let mut hasher = self.seed.build_hasher();
        if let Some(SessionScope(scope)) = scope {
            hasher.write_u8(2);
            hasher.write_u64(scope);
        }
        if let Some(id) = session_id(request.bytes())? {
            hasher.write_u8(0);
            hasher.write(id.as_bytes());
            return Ok(Some((SessionKey(hasher.finish()), true)));
        }
        hasher.write_u8(1);
        Ok(fingerprint(prompt, &mut hasher)
            .map(|continues| (SessionKey(hasher.finish()), continues)))
    }

    /// The model that last served the conversation, unless it expired.
    pub(crate) fn pinned(&self, key: SessionKey) -> Option<Arc<str>> {
        let now = Instant::now();
        self.shard(key).get(key.0, now)
    }

    /// Remembers that `model` served the conversation, for [`ttl`](SessionAffinity::ttl)
    /// from now.
    pub(crate) fn pin(&self, key: SessionKey, model: Arc<str>) {
        let now = Instant::now();
        let expires = now + self.ttl;
        self.shard(key).insert(key.0, model, now, expires);
    }

    fn shard(&self, key: SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        // The high bits: the low ones pick the map's buckets within the shard.
        let index = (key.0 >> 40) as usize % self.shards.len();
        // A panic while the lock was held left a map that is still a map: carry on with it.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many conversations are remembered (expired ones included until they are found).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().slots.len())
            .sum()
    }
}

/// Remembers that the catalog model `served` served the conversation `key`, when its answer
/// is a success (`status` 2xx). A model from outside the catalog (a client's own from
/// `models`) could never be chosen again: it is not remembered. The catalog's name is kept,
/// shared; `served` is usually that very name (the router handed it down), found by its
/// address.
pub(crate) fn remember_served(
    config: &super::policy::Config,
    key: SessionKey,
    status: http::StatusCode,
    served: &Arc<str>,
) {
    if !status.is_success() {
        return;
    }
    // The catalog of now, not the decision's: a model a replacement withdrew meanwhile would
    // only be passed over on the next turn.
    if let Some(sessions) = &config.sessions {
        if let Some(model) = config.catalog.snapshot().profile(served) {
            sessions.pin(key, model.id.clone());
        }
    }
}

/// Hashes the system text (system and developer messages before the first user message) and
/// the first user message: what stays the same from one turn of a conversation to the next.
/// `None` when there is no user message; else whether messages follow it (a later turn).
fn fingerprint(prompt: &Messages<'_>, hasher: &mut impl Hasher) -> Option<bool> {
    let mut messages = prompt.into_iter();
    for message in messages.by_ref() {
        let user = message.role == "user";
        if !(user || message.role == "system" || message.role == "developer") {
            continue;
        }
        hasher.write_u8(user.into());
        for part in &message.parts {
            match part.read_text() {
                // Length first: ("ab", "c") and ("a", "bc") differ.
                Some(text) => {
                    hasher.write_usize(text.len());
                    hasher.write(text.as_bytes());
                }
                // An image, a file: which kind, not its data.
                None => hasher.write_u8(part_kind(part)),
            }
        }
        hasher.write_u8(0xff);
        if user {
            return Some(messages.next().is_some());
        }
    }
    None
}

fn part_kind(part: &Part<'_>) -> u8 {
    match part {
        Part::Image => 1,
        Part::Audio => 2,
        Part::Video => 3,
        Part::File => 4,
        _ => 5,
    }
}

/// The body's top-level `session_id`, when it is a string; refused when it is another type,
/// longer than [`MAX_SESSION_ID_BYTES`] or given twice. A body that does not name the key
/// anywhere is not walked.
fn session_id(body: &[u8]) -> Result<Option<Cow<'_, str>>, ApiError> {
    if memchr::memmem::find(body, b"\"session_id\"").is_none() {
        return Ok(None);
    }
    let invalid = |why: &str| {
        ApiError::bad_request("invalid_session_id", format!("`session_id` {why}"))
            .with_param("session_id")
    };
    let found = serde_json::Deserializer::from_slice(body)
        .deserialize_map(SessionIdVisitor)
        // The body parsed as an object before: only `session_id` itself can fail here.
        .map_err(|_| invalid("must be a string, given once"))?;
    match found {
        Some(id) if id.len() > MAX_SESSION_ID_BYTES => Err(invalid(&format!(
            "is longer than {MAX_SESSION_ID_BYTES} bytes"
        ))),
        found => Ok(found),
    }
}

/// Finds the top-level `session_id` (a string, or `null` as none), skipping every other member.
/// Keys and the id are read as [`Str`]s, borrowed from the body when they hold no escape:
/// serde's `Cow<str>` would allocate a `String` for every top-level key.
struct SessionIdVisitor;

impl<'de> Visitor<'de> for SessionIdVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Option<Option<Str<'de>>> = None;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            if key != "session_id" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if found.is_some() {
                return Err(serde::de::Error::custom("`session_id` given twice"));
            }
            found = Some(map.next_value::<Option<Str<'de>>>()?);
        }
        Ok(found.flatten().map(|Str(id)| id))
    }
}

/// One shard: its conversations and the order they were last answered in.
struct Shard {
    capacity: usize,
    slots: HashMap<u64, Slot, BuildHasherDefault<KeyHasher>>,
    /// Keys as they were pinned, oldest first, with the pin's number: an entry whose number
    /// is not its slot's is stale (the key was pinned again since, or forgotten) and skipped.
    order: VecDeque<(u64, u64)>,
    pins: u64,
}

struct Slot {
    model: Arc<str>,
    expires: Instant,
    pin: u64,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: HashMap::default(),
            order: VecDeque::new(),
            pins: 0,
        }
    }

    fn get(&mut self, key: u64, now: Instant) -> Option<Arc<str>> {
        let slot = self.slots.get(&key)?;
        if slot.expires > now {
            return Some(slot.model.clone());
        }
        self.slots.remove(&key);
        None
    }

    fn insert(&mut self, key: u64, model: Arc<str>, now: Instant, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        self.pins += 1;
        let pin = self.pins;
        self.slots.insert(
            key,
            Slot {
                model,
                expires,
                pin,
            },
        );
        self.order.push_back((key, pin));
        // The oldest first: those expired, then past the bound the one answered longest ago.
        while let Some(&(oldest, pin)) = self.order.front() {
            let live = self.slots.get(&oldest).filter(|slot| slot.pin == pin);
            match live {
                Some(slot) if slot.expires > now && self.slots.len() <= self.capacity => break,
                Some(_) => {
                    self.slots.remove(&oldest);
                }
                None => {}
            }
            self.order.pop_front();
        }
        // Repeated pins of the same conversations leave stale entries behind: swept once
        // they are as many as the live ones, so the order stays within twice the bound.
        if self.order.len() > 2 * self.capacity {
            let slots = &self.slots;
            self.order
                .retain(|(key, pin)| slots.get(key).is_some_and(|slot| slot.pin == *pin));
        }
    }
}

/// The keys are already keyed hashes: the map uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn store(max: usize) -> Sessions {
        Sessions::new(SessionAffinity::new().max_sessions(max)).unwrap()
    }

    fn key_of(sessions: &Sessions, body: &str) -> Option<SessionKey> {
        conversation_of(sessions, body).map(|(key, _)| key)
    }

    fn conversation_of(sessions: &Sessions, body: &str) -> Option<(SessionKey, bool)> {
        let request = ChatRequest::parse(Bytes::from(body.to_owned())).unwrap();
        let prompt = request.prompt().unwrap();
        sessions.key(&request, &prompt, None).unwrap()
    }

    #[test]
    fn off_allocates_nothing() {
        assert!(Sessions::new(SessionAffinity::new().max_sessions(0)).is_none());
        assert!(Sessions::new(SessionAffinity::new().ttl(Duration::ZERO)).is_none());
    }

    #[test]
    fn the_bound_is_exact_and_the_least_recently_answered_goes() {
        let sessions = store(3);
        let model: Arc<str> = Arc::from("m");
        for key in 0..3 {
            sessions.pin(SessionKey(key), model.clone());
        }
        // Answered again: the most recent now.
        sessions.pin(SessionKey(0), model.clone());
        sessions.pin(SessionKey(3), model.clone());
        assert_eq!(sessions.len(), 3);
        assert!(sessions.pinned(SessionKey(1)).is_none());
        for key in [0, 2, 3] {
            assert!(sessions.pinned(SessionKey(key)).is_some(), "{key}");
        }
        // Many repeated pins: the order is swept, the bound holds.
        for _ in 0..100 {
            sessions.pin(SessionKey(2), model.clone());
        }
        let shard = sessions.shards[0].lock().unwrap();
        assert!(shard.order.len() <= 6, "{}", shard.order.len());
        assert_eq!(shard.slots.len(), 3);
    }

    #[test]
    fn a_large_bound_is_sharded_and_holds() {
        let sessions = store(1_000);
        assert_eq!(sessions.shards.len(), 16);
        let total: usize = sessions
            .shards
            .iter()
            .map(|s| s.lock().unwrap().capacity)
            .sum();
        assert_eq!(total, 1_000);
        let model: Arc<str> = Arc::from("m");
        let seed = RandomState::new();
        for key in 0..5_000u64 {
            sessions.pin(SessionKey(seed.hash_one(key)), model.clone());
        }
        assert!(sessions.len() <= 1_000, "{}", sessions.len());
        // Every shard took its share: the keys spread.
        assert!(sessions.len() >= 990, "{}", sessions.len());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_conversations_are_forgotten() {
        let sessions = Sessions::new(SessionAffinity::new().ttl(Duration::from_secs(10))).unwrap();
        sessions.pin(SessionKey(1), Arc::from("m"));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(sessions.pinned(SessionKey(1)).as_deref(), Some("m"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(sessions.pinned(SessionKey(1)).is_none());
        assert_eq!(sessions.len(), 0);
        // An expired conversation at the front of the order goes when another is pinned.
        sessions.pin(SessionKey(2), Arc::from("m"));
        tokio::time::advance(Duration::from_secs(11)).await;
        sessions.pin(SessionKey(3), Arc::from("m"));
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn a_ttl_too_long_for_the_clock_is_as_good_as_forever() {
        let sessions = Sessions::new(SessionAffinity::new().ttl(Duration::MAX)).unwrap();
        sessions.pin(SessionKey(1), Arc::from("m"));
        assert_eq!(sessions.pinned(SessionKey(1)).as_deref(), Some("m"));
    }

    #[test]
    fn the_key_is_the_opening_of_the_conversation_or_its_session_id() {
        let sessions = store(10);
        let turn1 = r#"{"messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"hi"}]}"#;
        let turn2 = r#"{"messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"more"}]}"#;
        let other_system = r#"{"messages":[{"role":"system","content":"Be long."},{"role":"user","content":"hi"}]}"#;
        let k1 = key_of(&sessions, turn1);
        assert!(k1.is_some());
        assert_eq!(k1, key_of(&sessions, turn2));
        assert_ne!(k1, key_of(&sessions, other_system));
        // The same text split otherwise is another opening.
        let split = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"h"},{"type":"text","text":"i"}]}]}"#;
        let whole = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_ne!(key_of(&sessions, split), key_of(&sessions, whole));
        // Anthropic's `system` and the Responses API's `instructions` read as system text.
        let anthropic = r#"{"system":"Be terse.","messages":[{"role":"user","content":"hi"}]}"#;
        let responses = r#"{"instructions":"Be terse.","input":"hi"}"#;
        assert_eq!(k1, key_of(&sessions, anthropic));
        assert_eq!(k1, key_of(&sessions, responses));
        // A session id keys whatever the messages.
        let a = r#"{"session_id":"s-1","messages":[{"role":"user","content":"hi"}]}"#;
        let b = r#"{"session_id":"s-1","messages":[{"role":"user","content":"bye"}]}"#;
        assert_eq!(key_of(&sessions, a), key_of(&sessions, b));
        assert_ne!(key_of(&sessions, a), key_of(&sessions, whole));
        // No user message: no conversation to key.
        let none = r#"{"messages":[{"role":"assistant","content":"hi"}]}"#;
        assert_eq!(key_of(&sessions, none), None);
        // Another process (another seed) keys it otherwise.
        assert_ne!(key_of(&store(10), whole), key_of(&sessions, whole));
        // Only a later turn, or a session id, continues a conversation.
        let continues = |body| conversation_of(&sessions, body).map(|(_, continues)| continues);
        assert_eq!(continues(turn1), Some(false));
        assert_eq!(continues(responses), Some(false));
        assert_eq!(continues(turn2), Some(true));
        assert_eq!(continues(a), Some(true));
        let tool_turn = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[]},{"role":"tool","content":"42"}]}"#;
        assert_eq!(continues(tool_turn), Some(true));
    }

    #[test]
    fn a_bad_session_id_is_refused() {
        let long = "x".repeat(MAX_SESSION_ID_BYTES + 1);
        for body in [
            format!(r#"{{"session_id":"{long}","messages":[]}}"#),
            r#"{"session_id":7,"messages":[]}"#.to_owned(),
            r#"{"session_id":"a","session_id":"b","messages":[]}"#.to_owned(),
        ] {
            let err = session_id(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "invalid_session_id", "{body}");
        }
        let at_limit = "x".repeat(MAX_SESSION_ID_BYTES);
        let body =
            format!(r#"{{"session_id":"{at_limit}","messages":[{{"content":"\"session_id\""}}]}}"#);
        assert_eq!(
            session_id(body.as_bytes()).unwrap().as_deref(),
            Some(&*at_limit)
        );
        assert_eq!(session_id(br#"{"session_id":null}"#).unwrap(), None);
        // Nested, it is not the request's.
        assert_eq!(
            session_id(br#"{"metadata":{"session_id":"x"}}"#).unwrap(),
            None
        );
    }

    /// Read off the body, not copied: an id without escapes is borrowed (and so is every
    /// key skipped on the way to it). An escape, in a key skipped or in the id, is decoded,
    /// as the upstream reads it.
    #[test]
    fn the_session_id_is_borrowed_from_the_body() {
        let plain = session_id(br#"{"model":"auto","session_id":"s-1"}"#).unwrap();
        assert!(matches!(plain, Some(Cow::Borrowed("s-1"))), "{plain:?}");
        let escaped = session_id(br#"{"mo\u0064el":"auto","session_id":"s\u002d1"}"#).unwrap();
        assert_eq!(escaped.as_deref(), Some("s-1"));
    }
}
