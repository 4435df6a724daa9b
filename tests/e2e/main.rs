//! End-to-end tests against a real Docker engine, Compose v2 and
//! registries (set up by scripts/test.sh). One binary, one module per area.

mod support;

mod browser;
mod channels;
mod ci_example;
mod container;
mod directory;
mod faults;
mod fleet;
mod follow_tags;
mod golden;
mod image_updates;
mod in_place;
mod inputs;
mod normalized;
mod notify_once;
mod operations;
mod page;
mod policy;
mod promises;
mod rebuild;
mod receiver;
mod revisions;
mod safety;
mod security;
mod serve;
mod start_first;
mod structural;
mod systemd;
mod terminal;
mod volumes;
mod what_changed;
