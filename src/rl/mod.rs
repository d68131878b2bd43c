//! The RL core: group-relative advantages, the DAPO objective family, and the controllers
//! (adaptive KL, curriculum, safety, dynamic sampling, overlong shaping).
