/*
 * Message ids: stable 128-bit ids (32 lower-case hex digits, as systemd-id128(1) makes
 * them) of the events operators alert on. journald gets them as MESSAGE_ID, JSON lines as
 * "message_id"; `journalctl MESSAGE_ID=<id>` finds every occurrence. docs/systemd.md lists
 * them: an id, once published, never changes meaning; a new event gets a new id.
 */
#ifndef MESH_MSGID_H
#define MESH_MSGID_H

/* The agent could not start (its STATUS= and ERRNO= went to the service manager too). */
#define MESH_MSGID_START_FAILED "c829e23b1c3d493f83ab3d6efbc3354b"
/* The agent is ready (READY=1). */
#define MESH_MSGID_READY "892b17840525439698cf34935aaea8b5"
/* A reload was refused; the previous config keeps running. */
#define MESH_MSGID_RELOAD_FAILED "005e5465e2b84c089de5dcf4d627f8b7"
/* A listener could not be bound. */
#define MESH_MSGID_LISTENER_FAILED "2267f1e3095a43c998101d7d8b5c21e8"
/* A registry lists everything again (Kubernetes 410 Gone, a lost Consul index). */
#define MESH_MSGID_RELIST "be42bc380b564517afc54ba800066788"
/* A registry cannot be reached or answers errors; its last good state is kept. */
#define MESH_MSGID_REGISTRY_DOWN "b2f03ba6c82244fda5d2450f394b12b6"
/* A registry that was down answers again. */
#define MESH_MSGID_REGISTRY_UP "2a11306f5000406a89dd4e8d1499822f"
/* A certificate was issued (or renewed) and is in use. */
#define MESH_MSGID_CERT_ISSUED "91f95e9a68ed45d0beccb48fdd8382f3"
/* A certificate could not be issued, renewed or loaded. */
#define MESH_MSGID_CERT_FAILED "d21e9431da6240c1bb52cee1c97e7b5f"
/* A certificate in use is past 80 % of its life and renewal keeps failing. */
#define MESH_MSGID_CERT_EXPIRING "93037b5b5fa344bba228f8422f11da0a"
/* A certificate in use has expired. */
#define MESH_MSGID_CERT_EXPIRED "9aa2a0faec644af8b6e4e42f45090953"

#endif
