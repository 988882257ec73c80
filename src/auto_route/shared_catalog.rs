//! A catalog that can be replaced while the services built with it run.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::Catalog;

/// A [`Catalog`] that can be replaced while the services built with it run: prices drop,
/// windows grow, models come and go (OpenRouter's `/models` list changes weekly), and a
/// server cannot rebuild its service stack without a restart.
///
/// Build the layer with [`AutoRouteLayer::with_shared_catalog`](super::AutoRouteLayer::with_shared_catalog)
/// and keep a clone of the handle: after [`replace`](Self::replace), every clone of the layer
/// and every service it built, on every thread, routes with the new catalog from its next
/// request on. A request already being decided keeps the catalog it started with: one
/// decision, one catalog.
///
/// Each request reads the current catalog with one atomic load ([`arc_swap`]): no lock, and
/// nothing the other threads write to until a replacement. A layer built with a plain
/// `Catalog` ([`AutoRouteLayer::new`](super::AutoRouteLayer::new)) does not even do that.
///
/// The replacement brings its own derived data ([`Catalog::from_profiles`] ranks once, at
/// construction), and the layer's settings apply to it as they did to the first one:
/// [`candidates`](super::AutoRouteLayer::candidates) keeps the same ids of each catalog (the
/// first request after a replacement filters it, once), and a conversation
/// ([`session_affinity`](super::AutoRouteLayer::session_affinity)) whose model the new
/// catalog no longer lists is routed as if it had none.
///
/// # Example
///
/// A task that fetches OpenRouter's list every hour and hands it to the running layer:
///
/// ```
/// use std::time::Duration;
/// use tower_llm_router::auto_route::{Catalog, ModelProfile, SharedCatalog};
/// use tower_llm_router::AutoRouteLayer;
///
/// # async fn fetch_openrouter_models() -> Result<Vec<u8>, std::io::Error> {
/// #     Ok(br#"{"data":[{"id":"openai/gpt-4o-mini","context_length":128000,
/// #         "pricing":{"prompt":"0.00000015","completion":"0.0000006"}}]}"#.to_vec())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let catalog = SharedCatalog::new(Catalog::from_profiles([
///     ModelProfile::new("openai/gpt-4o-mini", 128_000, 0.15, 0.6),
/// ]));
/// let layer = AutoRouteLayer::with_shared_catalog(catalog.clone());
///
/// let refresh = tokio::spawn(async move {
///     let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
///     loop {
///         every_hour.tick().await;
///         // A failed fetch or a list that does not parse keeps the catalog in use.
///         let Ok(json) = fetch_openrouter_models().await else { continue };
///         match Catalog::from_openrouter_models_json(&json) {
///             Ok(fresh) => catalog.replace(fresh),
///             Err(err) => eprintln!("OpenRouter's model list not applied: {err}"),
///         }
///     }
/// });
/// # tokio::task::yield_now().await;
/// # refresh.abort();
/// # let _ = layer;
/// # }
/// ```
#[derive(Clone)]
pub struct SharedCatalog {
    current: Arc<ArcSwap<Catalog>>,
}

impl SharedCatalog {
    /// A handle starting with `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(catalog)),
        }
    }

    /// Routes every request from now on with `catalog`, in every layer and service built with
    /// a clone of this handle. Requests already being decided finish with the catalog they
    /// started with, which is dropped after the last of them.
    pub fn replace(&self, catalog: Catalog) {
        self.current.store(Arc::new(catalog));
    }

    /// The catalog requests are routed with now: a snapshot, which a later
    /// [`replace`](Self::replace) does not change.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }
}

impl From<Catalog> for SharedCatalog {
    fn from(catalog: Catalog) -> Self {
        Self::new(catalog)
    }
}

impl fmt::Debug for SharedCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedCatalog")
            .field(&**self.current.load())
            .finish()
    }
}

/// Where the layer reads its catalog: fixed at construction, or a [`SharedCatalog`] with the
/// [`candidates`](super::AutoRouteLayer::candidates) filter to apply to each of its catalogs.
#[derive(Clone, Debug)]
pub(crate) enum CatalogSource {
    Fixed(Arc<Catalog>),
    Shared(SharedCatalog, Option<Arc<Candidates>>),
}

impl CatalogSource {
    /// The catalog this request is decided with.
    #[inline]
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        match self {
            CatalogSource::Fixed(catalog) => Snapshot::Fixed(catalog),
            CatalogSource::Shared(shared, None) => Snapshot::Shared(shared.current.load()),
            CatalogSource::Shared(shared, Some(candidates)) => {
                Snapshot::Filtered(candidates.of(shared.current.load()))
            }
        }
    }

    /// [`snapshot`](Self::snapshot), owned: for a decision that outlives the call (an async
    /// policy).
    pub(crate) fn snapshot_owned(&self) -> Arc<Catalog> {
        match self {
            CatalogSource::Fixed(catalog) => catalog.clone(),
            CatalogSource::Shared(shared, None) => shared.current.load_full(),
            CatalogSource::Shared(shared, Some(candidates)) => {
                candidates.of(shared.current.load()).kept.clone()
            }
        }
    }

    /// Keeps of every catalog only the models `ids` names (and an earlier filter kept).
    pub(crate) fn retain_ids(&mut self, ids: &[&str]) {
        match self {
            CatalogSource::Fixed(catalog) => {
                *catalog = Arc::new(retain(catalog, |id| ids.contains(&id)));
            }
            CatalogSource::Shared(shared, candidates) => {
                let kept: Box<[Box<str>]> = match candidates {
                    Some(earlier) => earlier
                        .ids
                        .iter()
                        .filter(|id| ids.contains(&&***id))
                        .cloned()
                        .collect(),
                    None => ids.iter().map(|&id| id.into()).collect(),
                };
                let last = Filtered::new(shared.current(), &kept);
                *candidates = Some(Arc::new(Candidates {
                    ids: kept,
                    last: ArcSwap::from_pointee(last),
                }));
            }
        }
    }
}

/// The models of `catalog` whose id `keep` accepts, in a catalog of their own (its orders
/// computed again).
fn retain(catalog: &Catalog, keep: impl Fn(&str) -> bool) -> Catalog {
    Catalog::from_profiles(catalog.models().iter().filter(|m| keep(&m.id)).cloned())
}

/// The [`candidates`](super::AutoRouteLayer::candidates) of a shared catalog, and the last
/// catalog filtered: a replacement is filtered once, by the first request that reads it,
/// not per request.
pub(crate) struct Candidates {
    ids: Box<[Box<str>]>,
    last: ArcSwap<Filtered>,
}

/// A catalog of the [`SharedCatalog`] and the models of it kept.
pub(crate) struct Filtered {
    /// Held, not weak: its address identifies it, and cannot be a new catalog's while held.
    source: Arc<Catalog>,
    kept: Arc<Catalog>,
}

impl Filtered {
    fn new(source: Arc<Catalog>, ids: &[Box<str>]) -> Self {
        let kept = Arc::new(retain(&source, |id| ids.iter().any(|k| **k == *id)));
        Self { source, kept }
    }
}

impl Candidates {
    /// The models of `source` kept: filtered once per catalog. The catalog filtered last is
    /// read through a guard, not a clone of its `Arc`: no reference count that every worker
    /// thread writes per request.
    fn of(&self, source: Guard<Arc<Catalog>>) -> Guard<Arc<Filtered>> {
        let last = self.last.load();
        if Arc::ptr_eq(&last.source, &source) {
            return last;
        }
        // Once per replacement (twice if two threads race here: the same result).
        drop(last);
        let filtered = Arc::new(Filtered::new(Guard::into_inner(source), &self.ids));
        self.last.store(filtered.clone());
        Guard::from_inner(filtered)
    }
}

impl fmt::Debug for Candidates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidates")
            .field("ids", &self.ids)
            .finish()
    }
}

/// The catalog one request is decided with.
pub(crate) enum Snapshot<'a> {
    Fixed(&'a Catalog),
    Shared(Guard<Arc<Catalog>>),
    Filtered(Guard<Arc<Filtered>>),
}

impl Deref for Snapshot<'_> {
    type Target = Catalog;

    #[inline]
    fn deref(&self) -> &Catalog {
        match self {
            Snapshot::Fixed(catalog) => catalog,
            Snapshot::Shared(catalog) => catalog,
            Snapshot::Filtered(last) => &last.kept,
        }
    }
}
