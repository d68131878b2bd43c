//! Rewards: GEPA feedback vectors, scorers, the mapping from scorer metrics to GEPA keys, and
//! the mixer that turns reward vectors into scalar rewards.
