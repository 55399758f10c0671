"""AccVideo benchmark: SynVid, the four student arms and the table (`fewstep bench accvideo`)."""
