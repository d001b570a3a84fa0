"""An example mio-agent plugin distribution."""
