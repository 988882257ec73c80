//! OpenRouter's `cost_tier`: the first choice taken from a cost-percentile band of the
//! candidates, the policy's ranking otherwise kept.

use std::borrow::Cow;

use serde::Deserialize;

/// OpenRouter's cost tiers: the cost-percentile bands `[0, 20)`, `[20, 40)`, `[40, 60)`,
/// `[60, 80)` and `[80, 100]` of the models the router may choose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CostTier {
    Low,
    Medium,
    High,
    Xhigh,
    Max,
}

/// How many bands the percentiles are cut into, one per tier.
const BANDS: usize = 5;

impl CostTier {
    const ALL: [CostTier; BANDS] = [
        CostTier::Low,
        CostTier::Medium,
        CostTier::High,
        CostTier::Xhigh,
        CostTier::Max,
    ];

    /// The tier's band, 0 the cheapest.
    fn band(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            CostTier::Low => "low",
            CostTier::Medium => "medium",
            CostTier::High => "high",
            CostTier::Xhigh => "xhigh",
            CostTier::Max => "max",
        }
    }

    /// The band's percentiles, for the decision's reason.
    fn percentiles(self) -> &'static str {
        match self {
            CostTier::Low => "[0, 20)",
            CostTier::Medium => "[20, 40)",
            CostTier::High => "[40, 60)",
            CostTier::Xhigh => "[60, 80)",
            CostTier::Max => "[80, 100]",
        }
    }
}

/// The candidates' blended prices, sorted: where a price falls among them.
#[derive(Debug)]
pub(crate) struct CostPercentiles {
    sorted: Vec<f64>,
}

impl CostPercentiles {
    /// Over these candidates' [`blended_price`](super::ModelProfile::blended_price)s (an
    /// invalid price is infinite: the dearest).
    pub(crate) fn new(prices: impl IntoIterator<Item = f64>) -> Self {
        let mut sorted: Vec<f64> = prices.into_iter().collect();
        sorted.sort_unstable_by(f64::total_cmp);
        CostPercentiles { sorted }
    }

    /// The band of a candidate of this price. Its percentile is `100 * k / (n - 1)`, `k` the
    /// candidates strictly cheaper, `n` all of them: the cheapest is at 0 and the dearest at
    /// 100 however few they are (five evenly priced models fill one band each), and equal
    /// prices share a percentile, the lowest of their ranks. One candidate is at 0.
    fn band(&self, price: f64) -> usize {
        let cheaper = self.sorted.partition_point(|p| p.total_cmp(&price).is_lt());
        let steps = self.sorted.len().saturating_sub(1).max(1);
        // floor(percentile / 20), in integers: no rounding at a band's edge.
        (BANDS * cheaper / steps).min(BANDS - 1)
    }
}

/// Puts first the models of `ranking` whose cost percentile is in `tier`'s band, in the
/// ranking's order, then the rest as they were. When no ranked model is in the band, or all
/// that are are cooling down (`is_cooling`) while others are not, the nearest band that holds
/// a model ready to be asked is used instead (of two as near, the cheaper): a request for the
/// `high` band whose models are all resting gets its nearest band's, not the policy's first
/// choice. `price_of` gives a ranked model's blended price; `reason` gets the tier and the
/// model it puts first.
pub(crate) fn band_first<T: AsRef<str>>(
    tier: CostTier,
    percentiles: &CostPercentiles,
    ranking: &mut Vec<T>,
    price_of: impl Fn(&T) -> f64,
    is_cooling: impl Fn(&T) -> bool,
    reason: &mut Cow<'static, str>,
) {
    let bands: Vec<usize> = ranking
        .iter()
        .map(|m| percentiles.band(price_of(m)))
        .collect();
    // The bands that hold a ranked model, and those that hold one not cooling down.
    let (mut ranked, mut ready) = (BandSet::default(), BandSet::default());
    for (model, &band) in ranking.iter().zip(&bands) {
        ranked.insert(band);
        if !is_cooling(model) {
            ready.insert(band);
        }
    }
    let usable = if ready.is_empty() { ranked } else { ready };
    let Some(band) = nearest_band(tier.band(), usable) else {
        return;
    };
    let mut rest = Vec::with_capacity(ranking.len());
    let mut in_band = Vec::with_capacity(ranking.len());
    for (model, &b) in ranking.drain(..).zip(&bands) {
        if b == band {
            in_band.push(model);
        } else {
            rest.push(model);
        }
    }
    in_band.append(&mut rest);
    *ranking = in_band;
    let first = ranking.first().map_or("", |m| m.as_ref());
    let n = percentiles.sorted.len();
    let (name, asked) = (tier.name(), tier.percentiles());
    *reason = if band == tier.band() {
        format!(
            "{reason}; cost_tier {name} (cost percentile {asked} of {n} candidates): {first} first"
        )
    } else {
        let used = CostTier::ALL[band];
        format!(
            "{reason}; cost_tier {name}: no candidate ranked in cost percentile {asked} of {n} \
             (or all cooling down), the nearest band {} ({}) used: {first} first",
            used.percentiles(),
            used.name()
        )
    }
    .into();
}

/// A set of bands, one bit each: what [`band_first`] asks of the ranking's bands, without a
/// list of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct BandSet(u8);

impl BandSet {
    fn insert(&mut self, band: usize) {
        self.0 |= 1 << band;
    }

    fn contains(self, band: usize) -> bool {
        band < BANDS && self.0 & (1 << band) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The band nearest `wanted` among `bands`, the cheaper of two as near; `None` when empty.
fn nearest_band(wanted: usize, bands: BandSet) -> Option<usize> {
    (0..BANDS).find_map(|distance| {
        let cheaper = wanted.checked_sub(distance).filter(|&b| bands.contains(b));
        let dearer = Some(wanted + distance).filter(|&b| bands.contains(b));
        cheaper.or(dearer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bands(prices: &[f64]) -> Vec<usize> {
        let percentiles = CostPercentiles::new(prices.iter().copied());
        prices.iter().map(|&p| percentiles.band(p)).collect()
    }

    /// Rank over `n - 1`: the ends are at 0 and 100 however few the candidates, and equal
    /// prices share the band of the lowest of their ranks.
    #[test]
    fn percentiles_rank_over_n_minus_one_and_ties_share() {
        assert_eq!(bands(&[5.0, 1.0, 3.0, 2.0, 4.0]), [4, 0, 2, 1, 3]);
        assert_eq!(bands(&[7.0]), [0]);
        assert_eq!(bands(&[1.0, 2.0]), [0, 4]);
        // 0, 33, 67, 100.
        assert_eq!(bands(&[1.0, 2.0, 3.0, 4.0]), [0, 1, 3, 4]);
        // The two cheapest at 0, the next at 50, the dearest two at 75.
        assert_eq!(bands(&[1.0, 1.0, 2.0, 3.0, 3.0]), [0, 0, 2, 3, 3]);
        // Every price the same: all at 0.
        assert_eq!(bands(&[2.0, 2.0, 2.0]), [0, 0, 0]);
        // An invalid price is infinite: the dearest.
        assert_eq!(bands(&[f64::INFINITY, 1.0, 2.0]), [4, 0, 2]);
        // Eleven models: rank 2 of 10 is at 20, the start of `medium`.
        let eleven: Vec<f64> = (0..11).map(f64::from).collect();
        assert_eq!(bands(&eleven), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4]);
    }

    #[test]
    fn an_empty_band_gives_way_to_the_nearest_the_cheaper_of_two() {
        let set = |bands: &[usize]| {
            let mut set = BandSet::default();
            bands.iter().for_each(|&band| set.insert(band));
            set
        };
        assert_eq!(nearest_band(2, set(&[0, 2, 4])), Some(2));
        assert_eq!(nearest_band(1, set(&[0, 4])), Some(0));
        assert_eq!(nearest_band(3, set(&[0, 4])), Some(4));
        assert_eq!(nearest_band(2, set(&[0, 4])), Some(0));
        assert_eq!(nearest_band(4, set(&[0])), Some(0));
        assert_eq!(nearest_band(0, set(&[3, 4])), Some(3));
        assert_eq!(nearest_band(0, set(&[])), None);
    }

    /// The band's models first in the ranking's order, the rest after them as they were.
    #[test]
    fn the_band_goes_first_and_the_rest_keeps_its_order() {
        let prices = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 3.0), ("e", 5.0)];
        let price = |m: &&str| prices.iter().find(|(id, _)| id == m).map_or(0.0, |p| p.1);
        let percentiles = CostPercentiles::new(prices.iter().map(|p| p.1));
        let mut ranking = vec!["e", "d", "b", "a", "c"];
        let mut reason = Cow::Borrowed("policy");
        band_first(
            CostTier::High,
            &percentiles,
            &mut ranking,
            price,
            |_| false,
            &mut reason,
        );
        assert_eq!(ranking, ["d", "c", "e", "b", "a"]);
        assert_eq!(
            reason,
            "policy; cost_tier high (cost percentile [40, 60) of 5 candidates): d first"
        );
        // A policy that ranks only some candidates: the band among those it ranked.
        let mut ranking = vec!["e", "c"];
        let mut reason = Cow::Borrowed("policy");
        band_first(
            CostTier::Low,
            &percentiles,
            &mut ranking,
            price,
            |_| false,
            &mut reason,
        );
        assert_eq!(ranking, ["c", "e"]);
        assert_eq!(
            reason,
            "policy; cost_tier low: no candidate ranked in cost percentile [0, 20) of 5 \
             (or all cooling down), the nearest band [40, 60) (high) used: c first"
        );
        // The band's models all cooling down: the nearest band with a model ready.
        let mut ranking = vec!["e", "d", "b", "a", "c"];
        let mut reason = Cow::Borrowed("policy");
        let cooling = |m: &&str| matches!(*m, "c" | "d");
        band_first(
            CostTier::High,
            &percentiles,
            &mut ranking,
            price,
            cooling,
            &mut reason,
        );
        assert_eq!(ranking, ["b", "e", "d", "a", "c"]);
        // All cooling down: the band asked for, as if none were.
        let mut ranking = vec!["e", "d", "b", "a", "c"];
        band_first(
            CostTier::High,
            &percentiles,
            &mut ranking,
            price,
            |_| true,
            &mut reason,
        );
        assert_eq!(ranking, ["d", "c", "e", "b", "a"]);
    }
}
