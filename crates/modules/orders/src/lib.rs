//! `orders`: under construction.
