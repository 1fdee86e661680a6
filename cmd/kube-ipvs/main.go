// Command kube-ipvs is the node agent. The real main arrives with the proxier.
package main

func main() {}
