//! The daemon's tests, one file per part beside this one.

mod messages;
