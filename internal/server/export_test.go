package server

// SetLongPollWaitHook makes f run each time a long-poll starts waiting.
func (s *Server) SetLongPollWaitHook(f func(agentID int)) { s.onLongPollWait.Store(&f) }
