"""`make demo`: a morning of Cloud Build builds, reported to a local Bitbucket."""
