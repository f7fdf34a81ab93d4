//! Scheduler: will plan operator order, scratchpad addresses and tensor spills for an operator
//! graph with an ILP in the manner of COSMA, with topological/LRU/Belady baselines and a
//! divide-and-conquer fallback. Depends on `tessera-spec` only.
