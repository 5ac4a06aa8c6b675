//! The Dragonfly protocol subset compiled by `build.rs` from `src/p2p/proto/`: prost messages and
//! tonic stubs, one module per protobuf package (nested as the packages are, `common::v2`, because
//! the generated code refers to its siblings that way). Nothing else lives here.
#![allow(clippy::all, missing_docs)]

pub mod common {
    //! `common.v2`: hosts, peers, tasks, pieces, downloads.
    pub mod v2 {
        //! Generated.
        tonic::include_proto!("common.v2");
    }
    pub use v2::*;
}
pub mod errordetails {
    //! `errordetails.v2`: why a back-to-source piece failed.
    pub mod v2 {
        //! Generated.
        tonic::include_proto!("errordetails.v2");
    }
    pub use v2::*;
}
pub mod scheduler {
    //! `scheduler.v2`: the host and peer announcements to the scheduler.
    pub mod v2 {
        //! Generated.
        tonic::include_proto!("scheduler.v2");
    }
    pub use v2::*;
}
pub mod dfdaemon {
    //! `dfdaemon.v2`: what a parent serves its children (SyncPieces).
    pub mod v2 {
        //! Generated.
        tonic::include_proto!("dfdaemon.v2");
    }
    pub use v2::*;
}
pub mod manager {
    //! `manager.v2`: which schedulers to announce to (ListSchedulers).
    pub mod v2 {
        //! Generated.
        tonic::include_proto!("manager.v2");
    }
    pub use v2::*;
}
