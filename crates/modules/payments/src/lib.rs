//! `payments`: under construction.
