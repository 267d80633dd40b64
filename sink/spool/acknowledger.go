package spool

// acknowledger is how an append is acknowledged: one implementation per
// durability mode (Config.SyncInterval), chosen once by Open. groupCommit
// (group.go, SyncInterval 0) buffers the frames and answers once a write and
// fdatasync shared with the concurrent appends covered them; ringStager
// (stager.go, SyncInterval > 0) stores them in the ring and answers at
// once, then copies them into the segment and fdatasyncs in the background.
//
// The Spool keeps what both share: the segments, the tail, the sizes, the
// positions, the sync of the segment file (syncLocked) and its rotation. An
// acknowledger keeps where frames wait until they are in the segment file.
// Every method but loop is called with the spool's mu held.
type acknowledger interface {
	// fits refuses n records of frames bytes together that the mode can
	// never take at once.
	fits(n int, frames int64) error
	// room reports whether frames bytes more can wait now: when not, it
	// made room (releasing mu meanwhile) and returns retry, and the caller
	// checks everything again.
	room(frames int64) (retry bool, err error)
	// place puts the frame of rec, appended at now, at segment offset off:
	// AppendAll places its records one by one from s.tail. (One record a
	// call: a slice of records passed through the interface would escape,
	// and Append would allocate.)
	place(off int64, rec []byte, now int64) error
	// wait releases mu and returns once the frames placed last are
	// acknowledged, after s.tail was advanced past them.
	wait() error
	// dirty reports whether frames were appended that are not yet written
	// and fdatasynced in the segment file.
	dirty() bool
	// cut readies the frames appended so far for one sync: it returns the
	// bytes the caller writes at the end of the segment file before the
	// fdatasync, and the segment offset up to which the frames are durable
	// after it. It may release mu (but returns with no I/O running).
	cut() (buf []byte, end int64, err error)
	// synced takes the outcome of the write and fdatasync of the last cut.
	synced(err error)
	// rotated learns that the live segment is now next, empty; the frames
	// of the sealed one are all durable in its file.
	rotated(next uint64)
	// busy reports an I/O of the acknowledger's own that runs without mu
	// (the ring's copy), which rotation and Close wait for.
	busy() bool
	// loop runs the background work of the mode until the spool's stop is
	// closed: the group committer, or the ring's copies and syncs.
	loop()
	// close releases what the mode holds; clean reports that the segment
	// file holds every frame.
	close(clean bool) error
}
