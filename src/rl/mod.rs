//! The RL core: group-relative advantages, the DAPO objective family, and the controllers
//! (adaptive KL, curriculum, safety, dynamic sampling, overlong shaping).
pub mod advantage;
pub mod bandit;
pub mod curriculum;
pub mod dynamic_sampling;
pub mod group_trainer;
pub mod kl_controller;
pub mod objective;
pub mod overlong;
pub mod policy;
pub mod safety;
