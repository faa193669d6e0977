package main
import (
 _ "sigs.k8s.io/controller-runtime"
 _ "sigs.k8s.io/controller-runtime/pkg/envtest"
 _ "k8s.io/client-go/kubernetes"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/go-logr/logr"
 _ "sigs.k8s.io/yaml"
)
func main(){}
