//! Scripted tests of the core, driven through the synchronous [`Harness`].

use bytes::Bytes;

use crate::ReadState;
use crate::testkit::harness::Harness;

#[test]
fn smoke_elect_replicate_read() {
    let mut net = Harness::new(3);
    net.elect(1);
    assert_eq!(net.leaders(), vec![1]);
    for i in 0..10u8 {
        net.node_mut(1).propose(Bytes::from(vec![i])).unwrap();
    }
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id).len(), 10, "node {id}");
    }
    net.node_mut(2).read_index(Bytes::from_static(b"r")).unwrap();
    net.settle();
    assert_eq!(net.reads[&2], vec![ReadState { ctx: Bytes::from_static(b"r"), index: 11 }]);
    // Forwarded proposal.
    net.node_mut(3).propose(Bytes::from_static(b"fwd")).unwrap();
    net.settle();
    assert_eq!(net.applied_data(2).last().unwrap(), &Bytes::from_static(b"fwd"));
    net.tick_all(50);
    assert_eq!(net.leaders(), vec![1]);
}
