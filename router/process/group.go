package process

// group runs a router's actors, in the oklog/run style: each actor is an execute, which runs
// until the actor is done, and an interrupt, which makes execute return. When the first
// execute returns, the group stops every actor, and run returns once all have ended.
//
// Unlike oklog/run, which interrupts every actor at once, a group stops its actors one at a
// time, in the order they were added: it calls an actor's interrupt, waits for its execute
// to return, and only then interrupts the next. A router's graceful stop has that order
// (the public side finishes its requests before the peers' side, both before the app
// stops, and the master hears from it until the end); oklog/run would leave it to the
// interrupts to block, relying on a loop order it does not document.
type group struct {
	actors []actor
}

type actor struct {
	execute   func() error
	interrupt func(error)
}

// add adds an actor. interrupt is called with the error of the first execute to return
// (nil for a graceful stop); it may take its time, a graceful stop of its own.
func (g *group) add(execute func() error, interrupt func(error)) {
	g.actors = append(g.actors, actor{execute, interrupt})
}

// addStop adds an actor that runs until the group stops, then calls stop: for what was
// started before the group runs and has a stop of its own that waits for its end.
func (g *group) addStop(stop func(error)) {
	quit := make(chan struct{})
	g.add(func() error {
		<-quit
		return nil
	}, func(err error) {
		stop(err)
		close(quit)
	})
}

// run starts every actor, waits for the first to return, stops them all in order and
// returns the first one's error.
func (g *group) run() error {
	if len(g.actors) == 0 {
		return nil
	}
	first := make(chan error, 1)
	done := make([]chan struct{}, len(g.actors))
	for i, a := range g.actors {
		done[i] = make(chan struct{})
		go func() {
			defer close(done[i])
			err := a.execute()
			select {
			case first <- err:
			default: // not the first
			}
		}()
	}
	err := <-first
	for i, a := range g.actors {
		a.interrupt(err)
		<-done[i]
	}
	return err
}
