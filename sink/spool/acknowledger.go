package spool

// acknowledger is how an append is acknowledged: one implementation per
// durability mode (Config.SyncInterval), chosen once by load. groupCommit
// (group.go, SyncInterval 0) buffers the frames and answers once a write and
// fdatasync shared with the concurrent appends covered them; ringStager
// (stager.go, SyncInterval > 0) stores them in the ring and answers at
// once, then copies them into the segment and fdatasyncs in the background.
//
// The Spool keeps what both share: the segments, the tail, the sizes, the
// positions, the write and fdatasync of the segment file (writeSyncLocked)
// and its rotation. An acknowledger keeps where frames wait
// until they are in the segment file. Every method but loop is called with
// the spool's mu held.
type acknowledger interface {
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
	// sync makes every frame appended so far durable in the segment file
	// through s.writeSyncLocked, and reports whether there was anything to
	// make durable. It releases mu during the I/O.
	sync() (bool, error)
	// rotated learns that the live segment is now next, empty; the frames
	// of the sealed one are all durable in its file.
	rotated(next uint64)
	// busy reports an I/O of the acknowledger's own that runs without mu
	// (the ring's copy, which does not wait for an fdatasync in flight),
	// which rotation and Close wait for.
	busy() bool
	// loop runs the background work of the mode until the spool's stop is
	// closed: the group committer, or the ring's copies and syncs.
	loop()
	// close releases what the mode holds; clean reports that the segment
	// file holds every frame.
	close(clean bool) error
}
