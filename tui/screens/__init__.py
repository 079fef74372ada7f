"""The app's screens: main (the debugger), help, go-to-step, breakpoints, prompt, error, too-small."""
