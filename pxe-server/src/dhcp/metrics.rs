//! Counters of the DHCP service: one per drop reason and one per answer type. Relaxed atomics
//! (statistics), shared by every thread that runs a responder.

crate::metrics::counters! {
    DhcpMetrics, DhcpSnapshot, "DHCP service";
    /// Datagrams handed to the responder.
    received,
    // Of those that decoded, by message type.
    received_discover,
    received_request,
    received_decline,
    received_release,
    received_inform,
    /// Server message types (OFFER, ACK, NAK) and other types sent by a client.
    received_other,
    // Malformed input (pxe_proto::dhcp::DecodeError).
    drop_truncated,
    drop_not_bootrequest,
    drop_bad_htype,
    drop_bad_hlen,
    drop_bad_magic,
    drop_option_overrun,
    drop_bad_overload,
    drop_missing_message_type,
    drop_unknown_message_type,
    drop_bad_option_length,
    /// Requested lease times above the wire limit (clamped, still answered).
    lease_time_clamped,
    /// Full mode, shared store: a lease write refused because another instance holds the
    /// address (the DISCOVER tries the next address, the REQUEST is NAKed).
    lease_conflicts,
    /// Full mode, several instances: SELECTING REQUESTs naming a dead instance, whose offer
    /// this one bound and ACKed in its name (the client's bucket is this instance's now).
    takeovers,
    // Requests that are valid but not answered.
    /// Proxy mode: the client is not a PXE/HTTP boot client.
    drop_not_pxe,
    /// `unknown_hosts = "ignore"` and the client matched no `[[hosts]]` entry.
    drop_unknown_host,
    /// No boot file for the client's architecture (proxy mode or port 4011).
    drop_no_boot_file,
    /// A REQUEST/DECLINE/RELEASE for another server.
    drop_not_for_us,
    /// A message type this mode does not answer (OFFER/ACK from a client, INFORM in proxy...).
    drop_unexpected_type,
    /// No server address is known for the interface the request came in on.
    drop_no_server_address,
    /// Full mode: no configured subnet for the link (giaddr or the local address).
    drop_no_subnet,
    /// Full mode: the pool is exhausted.
    drop_pool_exhausted,
    /// Full mode: a reservation lies outside the link's subnet, or its address is leased to
    /// another client.
    drop_reservation_conflict,
    /// Full mode: an INIT-REBOOT REQUEST from a client with no lease and no reservation, left
    /// unanswered (RFC 2131 §4.3.2).
    drop_init_reboot_unknown,
    /// Full mode: a new client from a link (relay or interface) that holds
    /// `max_leases_per_link` leases of its pool.
    drop_link_full,
    /// Full mode, several instances: a DISCOVER or INIT-REBOOT REQUEST whose RFC 3074 hash
    /// bucket another instance owns (that instance answers it).
    drop_not_our_bucket,
    /// Full mode: every address tried for a DISCOVER was taken by another instance first
    /// (`lease_conflicts` counts each one).
    drop_lease_conflict,
    /// The lease store failed to commit.
    drop_store_error,
    /// The reply did not fit or failed to encode.
    drop_encode_error,
    // Answers.
    offers,
    acks,
    naks,
    /// ACKs to INFORM (no lease).
    inform_acks,
    /// Answers on the PXE boot server port 4011.
    pxe_boot_acks,
    /// Answers dropped because their batch's lease commit failed (after they were counted
    /// as answers).
    drop_batch_commit,
    /// Send failures reported by the kernel.
    send_errors,
    /// Datagrams longer than the receive buffer (dropped).
    recv_truncated,
    // State changes without an answer.
    declines,
    releases,
}
