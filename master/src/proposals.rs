//! Finding an untried candidate for a proposal, with a fallback when the chain's model has none.
//!
//! A proposal first mutates its chain's base (the chain's current model, or a Boltzmann draw
//! for a chain without one) up to [`PRIMARY_TRIES`] times, as it always did. A model whose
//! neighbourhood is used up (every child already in the pool, or invalid, or over a constraint)
//! must not end the experiment, so the search then widens, in this order:
//!
//! 1. other bases drawn from the accepted pool with Boltzmann weights `exp(score / T)` at the
//!    chain's temperature, without replacement (up to [`FALLBACK_DRAWS`]);
//! 2. the other chains' current models not drawn yet;
//! 3. more Boltzmann draws, then pool members without a score (the seeds, before anything is
//!    scored), up to [`FALLBACK_BASES`] bases in all; 1–3 share `FALLBACK_BASES ×
//!    FALLBACK_TRIES` mutations equally (a small pool gets more tries per base);
//! 4. fresh hyperparameters ([`mutation::sample_hparams`]) for each distinct architecture among
//!    all these bases, `(FALLBACK_BASES + 1) × FRESH_TRIES` samples shared equally, each with
//!    its base's objective (not in ELR mode, whose step size the sampler does not draw).
//!
//! With `[search] predictor = true` and a fitted predictor, the primary phase keeps going until
//! it holds `predictor_candidates` distinct untried children (within
//! `max(PRIMARY_TRIES, 2 × predictor_candidates)` mutations) and returns the one the predictor
//! ranks best ([`predictor::best_candidate`]); the fallback phases are unchanged.
//!
//! Only when none of this yields a candidate does the proposal report [`Exhausted`]: after at
//! most [`MAX_ATTEMPTS`] candidates over at most `1 + FALLBACK_BASES` bases, whatever the pool's
//! size, so the effort under the writer lock stays bounded. The primary phase uses the
//! proposal's own stream (`STREAM_PROPOSAL`, seq) exactly as before; the fallback draws from its
//! own stream ([`STREAM_PROPOSAL_FALLBACK`], seq), so a replay makes the same choices.

use std::collections::HashSet;

use crate::store::PoolTx;
use explore_common::annealing;
use explore_common::mutation;
use explore_common::spec::ExperimentSpec;
use explore_common::{ExperimentId, Genome, HyperParams, TrialId};
use rand::Rng;

use crate::artifacts::ArtifactStore;
use crate::error::MasterError;
use crate::predictor::{self, Prediction, Predictor, SearchFeatures};
use crate::store::{ChainRow, TrialRow};

/// Randomness stream of the fallback search (after `STREAM_PROPOSAL`, `STREAM_ACCEPTANCE` and
/// the scheduler's trial-seed stream 3).
pub const STREAM_PROPOSAL_FALLBACK: u64 = 4;
/// Mutations of the chain's own base before the search widens.
pub const PRIMARY_TRIES: u64 = 16;
/// Boltzmann draws before the other chains' current models are tried.
pub const FALLBACK_DRAWS: usize = 16;
/// Most other bases one proposal tries.
pub const FALLBACK_BASES: usize = 32;
/// Mutations per fallback base when all [`FALLBACK_BASES`] are tried (fewer bases get more).
pub const FALLBACK_TRIES: u64 = 4;
/// Fresh hyperparameter samples per architecture when `FALLBACK_BASES + 1` distinct ones are
/// tried (fewer get more).
pub const FRESH_TRIES: u64 = 2;
/// Most candidates one proposal generates and checks against the pool.
pub const MAX_ATTEMPTS: u64 = PRIMARY_TRIES
    + FALLBACK_BASES as u64 * FALLBACK_TRIES
    + (FALLBACK_BASES as u64 + 1) * FRESH_TRIES;

/// An untried child, ready to be queued.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The trial it was derived from (its parent).
    pub base: TrialRow,
    pub genome: Genome,
    /// Epochs already cut to the fine-tune length and the epoch budget.
    pub hparams: HyperParams,
    /// What changed, for the trial's origin.
    pub description: String,
    /// The base's checkpoint, when the child inherits its weights.
    pub inherit_from: Option<String>,
    /// The search predictor's forecast, when it chose this candidate among several.
    pub prediction: Option<Prediction>,
}

/// No base of the pool yielded an untried candidate within the bounded effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Candidates generated (or tried to generate), all invalid or already in the pool.
    pub attempts: u64,
    /// Distinct bases they were derived from.
    pub bases: usize,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "search space exhausted: no untried candidate within the constraints after {} \
             attempts over {} bases",
            self.attempts, self.bases
        )
    }
}

/// What every candidate of one proposal shares.
pub struct Search<'a> {
    pub spec: &'a ExperimentSpec,
    pub experiment_id: &'a ExperimentId,
    pub artifacts: &'a ArtifactStore,
    /// Epochs left in the budget, when it has one.
    pub remaining_epochs: Option<u64>,
    /// The proposal's sequence number (the index of its random streams).
    pub seq: i64,
    /// How many of the first trials are the spec's seeds.
    pub seed_count: usize,
    /// The search predictor (`[search] predictor = true` with enough history): the primary
    /// phase then chooses among several candidates.
    pub predictor: Option<&'a Predictor<SearchFeatures>>,
}

impl Search<'_> {
    /// An untried candidate from `primary` (drawing from `rng`), else from the fallback bases.
    pub async fn find(
        &self,
        conn: &mut dyn PoolTx,
        chain: &ChainRow,
        primary: TrialRow,
        rng: &mut impl Rng,
    ) -> Result<Result<Candidate, Exhausted>, MasterError> {
        let mut attempts = 0;
        let found = match self.predictor {
            Some(predictor) => {
                self.mutate_ranked(conn, &primary, predictor, rng, &mut attempts)
                    .await?
            }
            None => {
                self.mutate(conn, &primary, PRIMARY_TRIES, rng, &mut attempts)
                    .await?
            }
        };
        if let Some(found) = found {
            return Ok(Ok(found));
        }
        let mut rng = annealing::rng_for(self.spec.seed, STREAM_PROPOSAL_FALLBACK, self.seq as u64);
        let bases = self.fallback_bases(conn, chain, &primary, &mut rng).await?;
        // A small pool shares the same effort among fewer bases.
        let tries = (FALLBACK_BASES as u64 * FALLBACK_TRIES / bases.len().max(1) as u64).max(1);
        for base in &bases {
            if let Some(found) = self
                .mutate(conn, base, tries, &mut rng, &mut attempts)
                .await?
            {
                tracing::debug!(
                    experiment_id = %self.experiment_id,
                    seq = self.seq,
                    exhausted_base = %primary.id,
                    base = %base.id,
                    attempts,
                    "the chain's base had no untried child: proposing from another base"
                );
                return Ok(Ok(found));
            }
        }
        let mut architectures = HashSet::new();
        let distinct: Vec<&TrialRow> = std::iter::once(&primary)
            .chain(&bases)
            .filter(|base| architectures.insert(base.genome_hash.as_str()))
            .collect();
        let tries = ((FALLBACK_BASES as u64 + 1) * FRESH_TRIES / distinct.len() as u64).max(1);
        for base in distinct {
            if let Some(found) = self
                .fresh(conn, base, tries, &mut rng, &mut attempts)
                .await?
            {
                return Ok(Ok(found));
            }
        }
        Ok(Err(Exhausted {
            attempts,
            bases: 1 + bases.len(),
        }))
    }

    /// The bases tried after `primary`, in order (see the module documentation); never
    /// `primary` itself, none twice, at most [`FALLBACK_BASES`].
    async fn fallback_bases(
        &self,
        conn: &mut dyn PoolTx,
        chain: &ChainRow,
        primary: &TrialRow,
        rng: &mut impl Rng,
    ) -> Result<Vec<TrialRow>, MasterError> {
        // `(id, score)` of the candidates: the best accepted trials by score (every accepted
        // trial of a pool of up to `store::BASE_CANDIDATES`), else the seed trials.
        let mut pool: Vec<(TrialId, Option<f64>)> = conn
            .base_candidates(self.experiment_id)
            .await?
            .into_iter()
            .map(|(id, _, score)| (id, Some(score)))
            .collect();
        if pool.is_empty() {
            pool = conn
                .train_trials_below(self.experiment_id, self.seed_count as i64)
                .await?
                .into_iter()
                .map(|t| (t.id, t.score))
                .collect();
        }
        let mut picked = Picked {
            taken: pool.iter().map(|t| t.0 == primary.id).collect(),
            // A taken trial's score is NaN, which gives it no Boltzmann weight.
            scores: pool
                .iter()
                .map(|t| match t.1 {
                    Some(s) if t.0 != primary.id => s,
                    _ => f64::NAN,
                })
                .collect(),
            order: Vec::new(),
        };
        while picked.order.len() < FALLBACK_DRAWS {
            let Some(i) = annealing::draw_base(&picked.scores, chain.temperature, rng) else {
                break;
            };
            picked.take(i);
        }
        for other in conn.list_chains(self.experiment_id).await? {
            if other.chain == chain.chain {
                continue;
            }
            if let Some(id) = &other.current_trial_id {
                if let Some(i) = pool.iter().position(|t| &t.0 == id) {
                    picked.take(i);
                } else if *id != primary.id && picked.order.len() < FALLBACK_BASES {
                    // A current model below the best candidates of a large pool.
                    pool.push((id.clone(), None));
                    picked.taken.push(false);
                    picked.scores.push(f64::NAN);
                    picked.take(pool.len() - 1);
                }
            }
        }
        while picked.order.len() < FALLBACK_BASES {
            let Some(i) = annealing::draw_base(&picked.scores, chain.temperature, rng) else {
                break;
            };
            picked.take(i);
        }
        for i in 0..pool.len() {
            picked.take(i);
        }
        let mut bases = Vec::with_capacity(picked.order.len());
        for i in picked.order {
            if let Some(row) = conn.get_trial(&pool[i].0).await? {
                bases.push(row);
            }
        }
        Ok(bases)
    }

    /// Up to `tries` mutations of `base`; the first untried one.
    async fn mutate(
        &self,
        conn: &mut dyn PoolTx,
        base: &TrialRow,
        tries: u64,
        rng: &mut impl Rng,
        attempts: &mut u64,
    ) -> Result<Option<Candidate>, MasterError> {
        let genome =
            Genome::from_json(&base.genome_json).map_err(explore_common::CommonError::from)?;
        let hparams = HyperParams::from_json(&base.hparams_json)?;
        for _ in 0..tries {
            *attempts += 1;
            // A base none of whose mutations applies is no different from one whose children
            // all exist: the next try, or the next base, may do better.
            let Ok(p) = mutation::propose(&genome, &hparams, &self.spec.search, rng) else {
                continue;
            };
            if let Some(found) = self
                .untried(conn, base, p.genome, p.hparams, p.description)
                .await?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Mutations of `base` until `predictor_candidates` distinct untried children are found
    /// (or `max(PRIMARY_TRIES, 2 × predictor_candidates)` were tried); the best predicted.
    async fn mutate_ranked(
        &self,
        conn: &mut dyn PoolTx,
        base: &TrialRow,
        predictor: &Predictor<SearchFeatures>,
        rng: &mut impl Rng,
        attempts: &mut u64,
    ) -> Result<Option<Candidate>, MasterError> {
        let wanted = self.spec.search.predictor_candidates as usize;
        let tries = PRIMARY_TRIES.max(2 * wanted as u64);
        let genome =
            Genome::from_json(&base.genome_json).map_err(explore_common::CommonError::from)?;
        let hparams = HyperParams::from_json(&base.hparams_json)?;
        let mut found: Vec<Candidate> = Vec::with_capacity(wanted);
        let mut distinct = HashSet::new();
        for _ in 0..tries {
            if found.len() == wanted {
                break;
            }
            *attempts += 1;
            let Ok(p) = mutation::propose(&genome, &hparams, &self.spec.search, rng) else {
                continue;
            };
            let Some(candidate) = self
                .untried(conn, base, p.genome, p.hparams, p.description)
                .await?
            else {
                continue;
            };
            if distinct.insert((
                candidate.genome.canonical_hash(),
                candidate.hparams.to_json(),
            )) {
                found.push(candidate);
            }
        }
        let features = found
            .iter()
            .map(|c| {
                SearchFeatures::of(&c.genome, &c.hparams, base.score, c.inherit_from.is_some())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Some((index, prediction)) = predictor::best_candidate(predictor, &features)? else {
            return Ok(None);
        };
        let count = found.len();
        let mut chosen = found.swap_remove(index);
        chosen.description = format!(
            "{} (predicted {:.4} ± {:.4}, best of {count})",
            chosen.description, prediction.mean, prediction.std
        );
        chosen.prediction = Some(prediction);
        Ok(Some(chosen))
    }

    /// Up to `tries` freshly sampled hyperparameters for `base`'s architecture; the first
    /// untried one. Nothing for a base outside the constraints or in ELR mode.
    async fn fresh(
        &self,
        conn: &mut dyn PoolTx,
        base: &TrialRow,
        tries: u64,
        rng: &mut impl Rng,
        attempts: &mut u64,
    ) -> Result<Option<Candidate>, MasterError> {
        let genome =
            Genome::from_json(&base.genome_json).map_err(explore_common::CommonError::from)?;
        let hparams = HyperParams::from_json(&base.hparams_json)?;
        if hparams.objective.is_elr() || self.spec.search.check_constraints(&genome).is_err() {
            return Ok(None);
        }
        for _ in 0..tries {
            *attempts += 1;
            let mut sampled = mutation::sample_hparams(&self.spec.search, rng);
            sampled.objective = hparams.objective;
            if sampled == hparams || mutation::check_objective(&genome, &sampled).is_err() {
                continue;
            }
            let description = format!(
                "fresh hyperparameters: {:?} lr {} {:?} batch {} wd {} epochs {}",
                sampled.optimizer,
                sampled.learning_rate,
                sampled.schedule,
                sampled.batch_size,
                sampled.weight_decay,
                sampled.epochs
            );
            if let Some(found) = self
                .untried(conn, base, genome.clone(), sampled, description)
                .await?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The child as it would be queued (epochs cut), unless the pool already holds it.
    async fn untried(
        &self,
        conn: &mut dyn PoolTx,
        base: &TrialRow,
        genome: Genome,
        mut hparams: HyperParams,
        description: String,
    ) -> Result<Option<Candidate>, MasterError> {
        let inherit_from = base
            .checkpoint_sha256
            .clone()
            .filter(|_| self.spec.inheritance.enabled);
        let inherit_from = match inherit_from {
            Some(sha) if self.artifacts.contains(&sha).await? => Some(sha),
            _ => None,
        };
        let fine_tune = self.spec.inheritance.fine_tune_epochs;
        if inherit_from.is_some() && fine_tune > 0 {
            hparams.epochs = hparams.epochs.min(fine_tune);
        }
        cap_epochs(&mut hparams, self.remaining_epochs);
        if conn
            .candidate_exists(
                self.experiment_id,
                &genome.canonical_hash(),
                &hparams.to_json(),
            )
            .await?
        {
            return Ok(None);
        }
        Ok(Some(Candidate {
            base: base.clone(),
            genome,
            hparams,
            description,
            inherit_from,
            prediction: None,
        }))
    }
}

/// The search predictor for one proposal of `experiment_id`: `None` when `[search] predictor`
/// is off or the experiment has fewer than [`predictor::MIN_HISTORY`] completed trials (and
/// then proposals are exactly as without it). Fitted on the [`predictor::SEARCH_HISTORY`]
/// most recent completed trials, so its cost does not grow with the pool. A fit that fails on
/// odd history is logged and skipped: the predictor only ever narrows a choice.
pub async fn search_predictor(
    conn: &mut dyn PoolTx,
    spec: &ExperimentSpec,
    experiment_id: &ExperimentId,
) -> Result<Option<Predictor<SearchFeatures>>, MasterError> {
    if !spec.search.predictor {
        return Ok(None);
    }
    let rows = conn
        .recent_completed_for_predictor(experiment_id, predictor::SEARCH_HISTORY)
        .await?;
    if rows.len() < predictor::MIN_HISTORY {
        return Ok(None);
    }
    let mut history = Vec::with_capacity(rows.len());
    for row in rows {
        let genome =
            Genome::from_json(&row.genome_json).map_err(explore_common::CommonError::from)?;
        let hparams = HyperParams::from_json(&row.hparams_json)?;
        let features = SearchFeatures::of(&genome, &hparams, row.parent_score, row.inherits)?;
        history.push((features, row.score));
    }
    match Predictor::fit(&history) {
        Ok(fitted) => Ok(Some(fitted)),
        Err(error) => {
            tracing::warn!(experiment_id = %experiment_id, %error, "search predictor not fitted: proposing without it");
            Ok(None)
        }
    }
}

/// The pool members chosen as fallback bases so far.
struct Picked {
    taken: Vec<bool>,
    scores: Vec<f64>,
    order: Vec<usize>,
}

impl Picked {
    /// Adds pool member `i` unless it was taken already or the list is full.
    fn take(&mut self, i: usize) {
        if !self.taken[i] && self.order.len() < FALLBACK_BASES {
            self.taken[i] = true;
            self.scores[i] = f64::NAN;
            self.order.push(i);
        }
    }
}

/// Cuts a trial's epochs to what is left of the epoch budget (at least one).
pub fn cap_epochs(hparams: &mut HyperParams, remaining_epochs: Option<u64>) {
    if let Some(left) = remaining_epochs {
        hparams.epochs = hparams
            .epochs
            .min(left.min(u64::from(u32::MAX)) as u32)
            .max(1);
    }
}
