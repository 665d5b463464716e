//! Member and cluster ids, computed exactly as etcd computes them, so that a member started with
//! the same flags has the same id under `raft-kv` and under etcd (`etcdctl member list` shows the
//! same hex ids).
//!
//! etcd (`server/etcdserver/api/membership`): a member id is the first 8 bytes (big-endian) of
//! SHA-1 over its sorted peer URLs, concatenated, followed by the cluster token (and, for a member
//! added at runtime, the Unix time in seconds as decimal). A cluster id is the first 8 bytes of
//! SHA-1 over the sorted member ids, each as 8 big-endian bytes.
//!
//! SHA-1 is used as a stable hash of configuration, not for security.

use super::url::Url;

/// The id etcd gives a member of a new cluster: from its peer URLs and the cluster token.
/// Never zero (a zero hash, which no real input produces, maps to 1: Raft reserves 0).
pub fn member_id(peer_urls: &[Url], cluster_token: &str) -> u64 {
    member_id_at(peer_urls, cluster_token, None)
}

/// The id etcd gives a member: as [`member_id`], and for a member added to a running cluster
/// (`MemberAdd`) also the Unix time in seconds, so that re-adding the same URLs gives a new id.
pub fn member_id_at(peer_urls: &[Url], cluster_token: &str, unix_secs: Option<i64>) -> u64 {
    let mut urls: Vec<String> = peer_urls.iter().map(Url::to_string).collect();
    urls.sort();
    let mut input = urls.concat().into_bytes();
    input.extend_from_slice(cluster_token.as_bytes());
    if let Some(secs) = unix_secs {
        input.extend_from_slice(secs.to_string().as_bytes());
    }
    nonzero(first_u64(&sha1(&input)))
}

/// The id etcd gives a cluster: from the ids of its initial members (in any order).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let input: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    nonzero(first_u64(&sha1(&input)))
}

fn first_u64(digest: &[u8; 20]) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn nonzero(id: u64) -> u64 {
    id.max(1)
}

/// SHA-1 (FIPS 180-4) of `data`.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut state: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks_exact(64) {
        sha1_block(&mut state, block);
    }
    let mut digest = [0; 20];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

fn sha1_block(state: &mut [u32; 5], block: &[u8]) {
    let mut w = [0u32; 80];
    for (i, word) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *state;
    for (i, wi) in w.iter().enumerate() {
        let (f, k) = match i {
            0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
            20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
            _ => (b ^ c ^ d, 0xCA62_C1D6),
        };
        let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = t;
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d, e]) {
        *s = s.wrapping_add(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(digest: [u8; 20]) -> String {
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_matches_the_standard_vectors() {
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(sha1(b"abc")), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        // Crosses a block boundary with the padding.
        assert_eq!(hex(sha1(&[b'a'; 1000])), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
    }

    fn urls(list: &str) -> Vec<Url> {
        Url::parse_list(list).unwrap()
    }

    /// The ids etcd 3.4.23 logs for its default single member ("added member 8e9e05c52164694d
    /// [http://localhost:2380] to cluster cdf818194e3a8c32").
    #[test]
    fn matches_etcd_for_the_default_member() {
        let id = member_id(&urls("http://localhost:2380"), "etcd-cluster");
        assert_eq!(id, 0x8e9e05c52164694d);
        assert_eq!(cluster_id(&[id]), 0xcdf818194e3a8c32);
    }

    /// The ids etcd 3.4.23 logs for the three members of its Procfile cluster.
    #[test]
    fn matches_etcd_for_a_three_member_cluster() {
        let token = "etcd-cluster-1";
        let ids = [
            member_id(&urls("http://127.0.0.1:12380"), token),
            member_id(&urls("http://127.0.0.1:22380"), token),
            member_id(&urls("http://127.0.0.1:32380"), token),
        ];
        assert_eq!(ids, [0x8211f1d0f64f3269, 0x91bc3c398fb3c146, 0xfd422379fda50e48]);
        assert_eq!(cluster_id(&ids), 0xef37ad9dc622a7c4);
        let mut reversed = ids;
        reversed.reverse();
        assert_eq!(cluster_id(&reversed), 0xef37ad9dc622a7c4);
    }

    #[test]
    fn ids_depend_on_sorted_urls_token_and_time() {
        let a = member_id(&urls("http://a:1,http://b:2"), "t");
        assert_eq!(a, member_id(&urls("http://b:2,http://a:1"), "t"));
        assert_ne!(a, member_id(&urls("http://a:1,http://b:2"), "u"));
        let at = member_id_at(&urls("http://a:1,http://b:2"), "t", Some(1_700_000_000));
        assert_ne!(a, at);
    }
}
