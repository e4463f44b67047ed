package procnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// objectCache reads the Secrets and ConfigMaps a pod refers to straight from
// the API server (no informer lag for objects created just before the pod),
// each once per attempt.
type objectCache struct {
	ctx        context.Context
	client     kubernetes.Interface
	namespace  string
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
}

func newObjectCache(ctx context.Context, client kubernetes.Interface, namespace string) *objectCache {
	return &objectCache{ctx: ctx, client: client, namespace: namespace,
		secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{}}
}

// secret returns nil without error for a missing optional Secret.
func (o *objectCache) secret(name string, optional *bool) (*corev1.Secret, error) {
	s, ok := o.secrets[name]
	if !ok {
		var err error
		s, err = o.client.CoreV1().Secrets(o.namespace).Get(o.ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			s, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		o.secrets[name] = s
	}
	if s == nil && !isOptional(optional) {
		return nil, fmt.Errorf("secret %q not found", name)
	}
	return s, nil
}

// configMap returns nil without error for a missing optional ConfigMap.
func (o *objectCache) configMap(name string, optional *bool) (*corev1.ConfigMap, error) {
	cm, ok := o.configMaps[name]
	if !ok {
		var err error
		cm, err = o.client.CoreV1().ConfigMaps(o.namespace).Get(o.ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		o.configMaps[name] = cm
	}
	if cm == nil && !isOptional(optional) {
		return nil, fmt.Errorf("configmap %q not found", name)
	}
	return cm, nil
}

func secretData(s *corev1.Secret) map[string]string {
	if s == nil {
		return nil
	}
	data := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		data[k] = string(v)
	}
	return data
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	if cm == nil {
		return nil
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Secret files are private unless the volume says otherwise (the API server
// defaults defaultMode to 0644, so in practice the pod folder's 0700 is what
// keeps them private).
const (
	secretFileMode    os.FileMode = 0o600
	configMapFileMode os.FileMode = 0o644
)

// materialiseVolume fills dir with the volume's files and returns the host
// folder that stands in for the volume.
func materialiseVolume(objs *objectCache, pod *corev1.Pod, v corev1.Volume, dir string) (string, error) {
	src := v.VolumeSource
	if src.HostPath != nil {
		// The node is this machine: a hostPath is itself.
		if t := src.HostPath.Type; t != nil && *t == corev1.HostPathDirectoryOrCreate {
			if err := os.MkdirAll(src.HostPath.Path, 0o755); err != nil {
				return "", err
			}
		}
		return src.HostPath.Path, nil
	}
	if err := os.RemoveAll(dir); err != nil { // a retry starts from scratch
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	switch {
	case src.EmptyDir != nil:
		return dir, nil
	case src.Secret != nil:
		return dir, writeSecret(objs, dir, src.Secret.SecretName, src.Secret.Items, src.Secret.DefaultMode, src.Secret.Optional)
	case src.ConfigMap != nil:
		return dir, writeConfigMap(objs, dir, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.DefaultMode, src.ConfigMap.Optional)
	case src.DownwardAPI != nil:
		return dir, writeDownwardAPI(pod, dir, src.DownwardAPI.Items, src.DownwardAPI.DefaultMode)
	case src.Projected != nil:
		for _, p := range src.Projected.Sources {
			var err error
			switch {
			case p.Secret != nil:
				err = writeSecret(objs, dir, p.Secret.Name, p.Secret.Items, src.Projected.DefaultMode, p.Secret.Optional)
			case p.ConfigMap != nil:
				err = writeConfigMap(objs, dir, p.ConfigMap.Name, p.ConfigMap.Items, src.Projected.DefaultMode, p.ConfigMap.Optional)
			case p.DownwardAPI != nil:
				err = writeDownwardAPI(pod, dir, p.DownwardAPI.Items, src.Projected.DefaultMode)
			default:
				err = permanent(errors.New("projected sources other than secret, configMap and downwardAPI are not supported"))
			}
			if err != nil {
				return "", err
			}
		}
		return dir, nil
	default:
		return "", permanent(errors.New("only secret, configMap, emptyDir, downwardAPI, projected and hostPath volumes are supported"))
	}
}

func writeSecret(objs *objectCache, dir, name string, items []corev1.KeyToPath, defaultMode *int32, optional *bool) error {
	s, err := objs.secret(name, optional)
	if err != nil {
		return err
	}
	data := map[string][]byte{}
	if s != nil {
		data = s.Data
	}
	return writeItems(dir, data, items, fileMode(defaultMode, secretFileMode), isOptional(optional), "secret "+name)
}

func writeConfigMap(objs *objectCache, dir, name string, items []corev1.KeyToPath, defaultMode *int32, optional *bool) error {
	cm, err := objs.configMap(name, optional)
	if err != nil {
		return err
	}
	return writeItems(dir, configMapData(cm), items, fileMode(defaultMode, configMapFileMode), isOptional(optional), "configmap "+name)
}

// writeItems writes every key, or only the listed items, as files.
func writeItems(dir string, data map[string][]byte, items []corev1.KeyToPath, mode os.FileMode, optional bool, what string) error {
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			if err := writeFile(dir, k, data[k], mode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("key %q not found in %s", it.Key, what)
		}
		if err := writeFile(dir, it.Path, v, fileMode(it.Mode, mode)); err != nil {
			return err
		}
	}
	return nil
}

func writeDownwardAPI(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, defaultMode *int32) error {
	for _, it := range items {
		if it.FieldRef == nil {
			return permanent(fmt.Errorf("downwardAPI item %q: only fieldRef is supported", it.Path))
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		if err := writeFile(dir, it.Path, []byte(v), fileMode(it.Mode, fileMode(defaultMode, configMapFileMode))); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(dir, rel string, data []byte, mode os.FileMode) error {
	p := filepath.Join(dir, filepath.Clean("/"+rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode) // WriteFile's mode is subject to the umask
}

func fileMode(m *int32, def os.FileMode) os.FileMode {
	if m == nil {
		return def
	}
	return os.FileMode(*m) & os.ModePerm
}
