package client_test

// childEnv names the test binary's child mode (see TestMain).
const childEnv = "CAIRN_CLIENT_TEST_CHILD"

func runChild(name string) int { return 2 }
